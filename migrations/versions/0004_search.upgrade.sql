-- pgseek 0004: what search needs beyond the document store. Keyword statistics give
-- BM25 its inverse document frequency (ts_rank has none); pgseek.refresh_text_stats()
-- (a pg_cron job, hourly) recomputes them. Search settings trade recall for speed.

-- Documents per lexeme of documents.fts.
create table pgseek.text_stats (
    term text primary key,
    doc_freq integer not null
);

-- Corpus size and mean document length (distinct lexemes) at the last refresh.
create table pgseek.text_stats_summary (
    singleton boolean primary key default true,
    documents bigint not null default 0,
    avg_length double precision not null default 0,
    refreshed_at timestamptz,
    constraint text_stats_summary_single_row check (singleton)
);
insert into pgseek.text_stats_summary default values;

alter table pgseek.config
add column ef_search integer not null default 100,
add column ivfflat_probes integer not null default 10,
add column exact_search_max_rows integer not null default 3000,
add constraint config_ef_search_range check (ef_search between 1 and 1000),
add constraint config_ivfflat_probes_range check (ivfflat_probes between 1 and 32768),
add constraint config_exact_search_max_rows_range check (
    exact_search_max_rows between 0 and 1000000
);
comment on column pgseek.config.exact_search_max_rows is
'A filtered vector search whose filter matches at most this many rows scans them exactly.';
