-- Reverts 0002.
--! no-transaction
drop index concurrently if exists pgseek.documents_embedding_384_hnsw_cosine;
