-- Reverts 0004.
alter table pgseek.config
drop column exact_search_max_rows,
drop column ivfflat_probes,
drop column ef_search;
drop table pgseek.text_stats_summary;
drop table pgseek.text_stats;
