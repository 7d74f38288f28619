-- Reverts 0009 (rows stored inline stay so until rewritten).
set local lock_timeout = '5s';
set local statement_timeout = '60s';

alter table pgseek.documents reset (toast_tuple_target);
