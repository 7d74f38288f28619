-- pgseek 0011: a purge run whose session ended mid-way (terminated, the server stopped)
-- used to stay 'running' in pgseek.purge_log for good. Each run now holds an advisory
-- lock on its id while it works, and the next run marks the 'running' rows whose lock
-- is free 'interrupted' (sql/110-retention.sql). This allows the status.
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

-- The new check allows more than the one it replaces, and validating it reads a table
-- of a few hundred rows (purge_log_keep of nightly runs): no NOT VALID step needed.
alter table pgseek.purge_log
-- squawk-ignore ban-drop-constraint
drop constraint purge_log_status_known,
-- squawk-ignore constraint-missing-not-valid
add constraint purge_log_status_known check (
    status in ('running', 'finished', 'time budget reached', 'skipped', 'failed', 'interrupted')
);
