-- pgseek 0005: retention. A policy deletes documents (and sources) whose metadata
-- contains `match` once they are older than `keep` (on created_at); no policy, no
-- purge. Each purge run is logged; the log itself is pruned.

create table pgseek.retention_policies (
    id bigint generated always as identity primary key,
    match jsonb not null,
    keep interval not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint retention_policies_match_unique unique (match),
    constraint retention_policies_match_is_object check (jsonb_typeof(match) = 'object'),
    constraint retention_policies_keep_positive check (keep > interval '0')
);

create table pgseek.purge_log (
    id bigint generated always as identity primary key,
    started_at timestamptz not null default clock_timestamp(),
    finished_at timestamptz,
    status text not null default 'running',
    deleted bigint not null default 0,
    batches integer not null default 0,
    per_policy jsonb not null default '{}',
    error text,
    advice text,
    constraint purge_log_status_known check (
        status in ('running', 'finished', 'time budget reached', 'skipped', 'failed')
    )
);
create index purge_log_started_idx on pgseek.purge_log (started_at);

alter table pgseek.config
add column purge_batch_size integer not null default 1000,
add column purge_time_budget interval not null default '5 minutes',
add column purge_log_keep interval not null default '90 days',
add column query_cache_keep interval not null default '30 days',
add column cron_history_keep interval not null default '7 days',
add constraint config_purge_batch_size_range check (purge_batch_size between 1 and 100000),
add constraint config_purge_intervals_positive check (
    purge_time_budget > interval '0' and purge_log_keep > interval '0'
    and query_cache_keep > interval '0' and cron_history_keep > interval '0'
);
