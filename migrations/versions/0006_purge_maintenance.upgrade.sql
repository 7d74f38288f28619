-- pgseek 0006: maintenance after large purges. pgvector's HNSW graph degrades with many
-- deletes and a plain VACUUM of a big HNSW index is slow, so when a purge deletes more
-- than maintenance_after_purge_share of the documents, pgseek rebuilds the table's
-- indexes concurrently, then vacuums (pg_cron jobs, see sql/110-retention.sql).

alter table pgseek.config
add column maintenance_after_purge_share double precision default 0.1,
add constraint config_maintenance_share_range check (
    maintenance_after_purge_share > 0 and maintenance_after_purge_share <= 1
);

comment on column pgseek.config.maintenance_after_purge_share is
'Reindex and vacuum after a purge deleting more than this share of documents; NULL: never.';

alter table pgseek.purge_log
add column maintenance text,
add column maintenance_updated_at timestamptz;

comment on column pgseek.purge_log.maintenance is
'After a large purge: reindex scheduled, vacuum scheduled, done, failed: ..., or advised: ...';
