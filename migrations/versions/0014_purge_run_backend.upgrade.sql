-- pgseek 0014: each purge run records the backend running it and the start of the
-- statement it runs in (pg_stat_activity.pid and query_start), so that another run can
-- tell whether it is still working (sql/110-retention.sql, purge_run_alive). Nullable:
-- rows written before have neither, and are judged by their advisory lock as before.
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

alter table pgseek.purge_log
add column backend_pid integer,
add column backend_query_start timestamptz;

comment on column pgseek.purge_log.backend_pid is
'the backend (pg_stat_activity.pid) that ran this purge';
comment on column pgseek.purge_log.backend_query_start is
'pg_stat_activity.query_start of the statement the run was called in: the run is alive '
'while that backend is active in that statement';
