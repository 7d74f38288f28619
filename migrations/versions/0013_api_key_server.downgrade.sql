-- Reverts 0013: keys are no longer bound to a server.
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

-- Only pgseek's own functions read the column, and the downgrade re-creates them.
alter table pgseek.provider_secrets
-- squawk-ignore ban-drop-column
drop column base_url;
