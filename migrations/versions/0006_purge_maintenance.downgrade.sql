-- Reverts 0006.
alter table pgseek.purge_log
drop column maintenance_updated_at,
drop column maintenance;
alter table pgseek.config
drop column maintenance_after_purge_share;
