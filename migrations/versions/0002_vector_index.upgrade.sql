-- pgseek 0002: the default vector index, HNSW with cosine distance on 384-dimension
-- embeddings (all-MiniLM-L6-v2), m = 16, ef_construction = 64 (pgvector's defaults).
-- A partial expression index: rows of another dimension are simply not in it. Other
-- configurations are built by `make vector-index` from pgseek.config.
-- Built concurrently so that upgrading a populated table does not block writes;
-- dropping first replaces an INVALID index left by an interrupted run.

--! no-transaction
drop index concurrently if exists pgseek.documents_embedding_384_hnsw_cosine;
create index concurrently documents_embedding_384_hnsw_cosine
on pgseek.documents using hnsw ((embedding::vector(384)) vector_cosine_ops)
with (m = 16, ef_construction = 64)
where vector_dims(embedding) = 384;
