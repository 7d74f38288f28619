-- Reverts 0011: interrupted runs are recorded as failed (their error says why).
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

update pgseek.purge_log set status = 'failed'
where status = 'interrupted';

alter table pgseek.purge_log
-- squawk-ignore ban-drop-constraint
drop constraint purge_log_status_known,
-- squawk-ignore constraint-missing-not-valid
add constraint purge_log_status_known check (
    status in ('running', 'finished', 'time budget reached', 'skipped', 'failed')
);
