-- Reverts 0014: purge runs no longer record their backend.
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

-- Only pgseek's own purge_expired() reads and writes the columns.
alter table pgseek.purge_log
-- squawk-ignore ban-drop-column
drop column backend_query_start,
-- squawk-ignore ban-drop-column
drop column backend_pid;
