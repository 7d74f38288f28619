-- Where pg_cron lives in this database, make sure pgseek's jobs exist (scheduling is
-- idempotent by job name and keeps paused jobs paused).
do $$
begin
    if exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
        perform pgseek.schedule_jobs();
    end if;
end
$$;
