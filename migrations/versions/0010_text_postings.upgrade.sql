-- pgseek 0010: keyword postings. BM25 used to score a query by reading every document
-- that contains one of its words: a bitmap heap scan of pgseek.documents, whose rows
-- (a 1.5 kB vector inline since 0009, the passage, its tsvector) fill a page each few,
-- so a query of common words visited a page per matching row: on 100K passages a query
-- matching 22K documents fetched 18K pages (about 30 ms) before it scored a row.
-- pgseek.text_postings holds one row per (lexeme, document) with what BM25 needs (the
-- term frequency, the document's length and its tenant), and its primary key carries
-- them all: a query reads the index only, a few hundred pages for the same 22K
-- documents. It costs disk (about 3.4 kB per 100-word passage, table and index) and
-- write time; sql/015-text-postings.sql keeps it current with statement triggers and
-- fills it when it is empty (this migration leaves it empty so that the filling happens
-- in the transaction that installs the triggers: no write can slip between them).

set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

create table pgseek.text_postings (
    term text not null,
    document_id uuid not null,
    -- occurrences of the lexeme in the document: tsvector keeps at most 256 positions,
    -- and the table has a row per distinct word of every document, so a smallint
    -- squawk-ignore prefer-bigint-over-smallint
    tf smallint not null,
    -- the document's number of distinct lexemes, length(fts): BM25's document length
    doc_length integer not null,
    -- the document's tenant, for row-level security (sql/095-tenants.sql)
    tenant text,
    constraint text_postings_pkey primary key (term, document_id) include (tf, doc_length, tenant)
);
comment on table pgseek.text_postings is
'BM25 postings of pgseek.documents (lexeme, document, tf, length), kept by triggers.';

-- Rows arrive in bulk and searches read them with index-only scans, which need the
-- visibility map: vacuum after a twentieth of the table was inserted, not a fifth.
alter table pgseek.text_postings set (
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_vacuum_scale_factor = 0.05
);

-- Tenants (0008): the same policies as the documents'.
create policy text_postings_tenant on pgseek.text_postings
using (tenant = (select pgseek.current_tenant()));
create policy text_postings_admin on pgseek.text_postings to pgseek_admin
using (true) with check (true);
