-- pgseek 0009: vectors inline. pgvector stores a vector as EXTERNAL (out of line,
-- uncompressed), and PostgreSQL starts moving values to the TOAST table once a row
-- passes about 2 kB: a 384-d vector is 1.5 kB, so with a passage and its tsvector the
-- embedding of almost every row went out of line, and every exact scan, filtered
-- search and keyword-only row of hybrid_search fetched it from the TOAST table (a second
-- index lookup and heap fetch per row). Measured on 100K passages: the exact scan took
-- 690 ms with the vectors in TOAST and 99 ms inline; a filtered search_similar 49 ms and
-- 19 ms. toast_tuple_target = 8160 (its maximum) leaves rows whole up to a page; longer
-- rows are still toasted, their longest values first.
--
-- A storage parameter: existing rows keep their out-of-line vectors until they are
-- rewritten (an update, re-embedding, or VACUUM FULL / pg_repack in a maintenance
-- window); new rows are stored inline.

set local lock_timeout = '5s';
set local statement_timeout = '60s';

alter table pgseek.documents set (toast_tuple_target = 8160);
