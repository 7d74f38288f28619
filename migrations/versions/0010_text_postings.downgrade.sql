-- Reverts 0010: keyword search reads the documents again.
-- A downgrade removes what its upgrade added, by definition:
-- squawk-ignore-file ban-drop-table
set local search_path = pg_catalog, pg_temp;
set local lock_timeout = '5s';
set local statement_timeout = '60s';

drop table pgseek.text_postings;
