-- Where pg_cron lives in this database, make sure pgseek's jobs exist (scheduling is
-- idempotent by job name and keeps paused jobs paused).
do $$
declare
    caller_path text := pg_catalog.current_setting('search_path');
begin
    -- Built-ins only, whatever the migrating session's path; restored at the end.
    perform pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    if exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
        perform pgseek.schedule_jobs();
    end if;
    perform pg_catalog.set_config('search_path', caller_path, true);
end
$$;
