"""The glue between pgseek's PL/Python functions and its pure-Python logic.

Every PL/Python function in sql/ puts the library on ``sys.path`` and calls one
function here, passing ``plpy`` and ``GD`` (the backend's cache). Query plans and
loaded models are kept in ``GD``, so each backend loads a model once.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import unicodedata
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from pgseek.embeddings.errors import (
    EmbeddingConfigError,
    EmbeddingError,
    PermanentEmbeddingError,
    RetryableEmbeddingError,
)
from pgseek.embeddings.openai import DEFAULT_BASE_URL
from pgseek.embeddings.registry import cached_provider

TARGETS = ("embedding", "embedding_next")
# Remote-provider retry defaults inside the database, unless the options set them: the
# queue worker does not retry in-process (the queue retries with backoff, without
# holding a transaction open), and a query retries once, briefly, not for minutes.
WORKER_RETRY_DEFAULTS = {"max_retries": 0, "timeout": 10.0}
QUERY_RETRY_DEFAULTS = {"max_retries": 1, "max_retry_wait": 2.0}
# SQLSTATEs: a bad configuration is invalid_parameter_value; any failure of the
# provider itself (unreachable, rate-limited, bad answer) is external_routine_exception.
SQLSTATE_CONFIG = "22023"
SQLSTATE_PROVIDER = "38000"
BATCH_LOG_KEEP = "7 days"

CONFIG_SQL = """
select embedding_provider, embedding_model, embedding_dimensions, embedding_options,
    next_embedding_provider, next_embedding_model, next_embedding_dimensions,
    next_embedding_options, embedding_mode, queue_max_attempts,
    extract(epoch from queue_retry_delay)::float8 as retry_delay,
    extract(epoch from queue_retry_max_delay)::float8 as retry_max_delay
from pgseek.config
"""

CLAIM_SQL = """
select q.id, q.document_id, q.target, q.attempts, d.content, d.content_hash
from pgseek.embedding_queue as q
inner join pgseek.documents as d on q.document_id = d.id
where q.next_attempt_at <= now()
order by q.next_attempt_at, q.id
limit $1
for update of q skip locked
"""

# Writes only where the text is still the text that was embedded: a concurrent update
# of content has queued a new entry of its own.
WRITE_SQL = {
    target: f"""
        update pgseek.documents as d
        set {target} = v.embedding::vector
        from unnest($1::uuid[], $2::text[], $3::bytea[]) as v (id, embedding, content_hash)
        where d.id = v.id and d.content_hash = v.content_hash
        """
    for target in TARGETS
}

# Claimed entries of the finished documents, and unclaimed duplicates for the same text.
DONE_SQL = """
delete from pgseek.embedding_queue
where id = any($1::bigint[])
    or id in (
        select q.id
        from pgseek.embedding_queue as q
        inner join unnest($2::uuid[], $3::bytea[]) as v (id, content_hash)
            on q.document_id = v.id and q.content_hash = v.content_hash
        where q.target = $4
        for update of q skip locked
    )
"""

# Dead letters of the documents whose current text now has its vector: obsolete.
CLEARED_SQL = """
delete from pgseek.embedding_dead_letter as f
using unnest($1::uuid[], $2::bytea[]) as v (id, content_hash), pgseek.documents as d
where f.document_id = v.id and f.target = $3 and d.id = v.id and d.content_hash = v.content_hash
"""

RETRY_SQL = """
update pgseek.embedding_queue as q
set attempts = q.attempts + 1, last_error = v.error,
    next_attempt_at = now() + make_interval(secs => v.delay)
from unnest($1::bigint[], $2::text[], $3::float8[]) as v (id, error, delay)
where q.id = v.id
"""

# Entries of text the document no longer holds are only deleted: the entry of its
# current text (queued by the edit) decides, and a dead letter would outlive its success.
DEAD_LETTER_SQL = """
with moved as (
    delete from pgseek.embedding_queue as q
    using unnest($1::bigint[], $2::text[]) as v (id, error)
    where q.id = v.id
    returning q.document_id, q.target, q.content_hash, q.attempts + 1 as attempts,
        v.error, q.queued_at
)
insert into pgseek.embedding_dead_letter
    (document_id, target, content_hash, attempts, error, first_queued_at)
select distinct on (m.document_id, m.target)
    m.document_id, m.target, m.content_hash, m.attempts, m.error, m.queued_at
from moved as m
inner join pgseek.documents as d on d.id = m.document_id and d.content_hash = m.content_hash
order by m.document_id, m.target, m.queued_at
on conflict (document_id, target) do update
set content_hash = excluded.content_hash, attempts = excluded.attempts,
    error = excluded.error, failed_at = now()
"""

BATCH_LOG_SQL = """
insert into pgseek.embedding_batches (target, model, embedded, failed, seconds)
values ($1, $2, $3, $4, $5)
"""

CACHE_GET_SQL = """
select embedding::text, last_used_at < now() - interval '1 hour' as stale
from pgseek.query_embeddings where model = $1 and text_hash = $2
"""
# The query cache is written in the caller's transaction (a search may run in any), so
# a search must never wait for, or fail because of, another transaction's cache write:
# - writes only under READ COMMITTED: under REPEATABLE READ or SERIALIZABLE an entry
#   added after the snapshot makes the insert (or the refresh) a serialization failure;
# - not on a standby or in a read-only transaction, which cannot write;
# - a new entry only under an advisory lock on its (model, text hash), tried, never
#   waited for: a transaction still holding its uncommitted entry for the same text (or
#   two transactions searching two texts in opposite orders) makes the insert skip,
#   not wait (or deadlock); the lock ends with the transaction, and its key is a hash
#   of a name of its own, so it meets no other advisory lock;
# - a refresh of an entry unused for an hour skips it when its row is locked (another
#   transaction refreshing it, or purge_expired deleting it).
WRITABLE_SQL = """
select not pg_is_in_recovery()
    and current_setting('transaction_read_only') = 'off'
    and current_setting('transaction_isolation') = 'read committed' as writable
"""
CACHE_PUT_SQL = """
insert into pgseek.query_embeddings (model, text_hash, embedding)
select $1, $2, $3::vector
where pg_try_advisory_xact_lock(
    hashtextextended('pgseek.query_embeddings:' || $1 || ':' || encode($2, 'hex'), 0)
)
on conflict (model, text_hash) do update set last_used_at = now()
"""
CACHE_REFRESH_SQL = """
update pgseek.query_embeddings as q
set last_used_at = now()
from (
    select model, text_hash from pgseek.query_embeddings
    where model = $1 and text_hash = $2
    for update skip locked
) as free
where q.model = free.model and q.text_hash = free.text_hash
"""


def plan(plpy: Any, gd: MutableMapping, sql: str, types: Sequence[str] = ()) -> Any:
    """A prepared plan for ``sql``, prepared once per backend."""
    plans = gd.setdefault("pgseek.plans", {})
    if sql not in plans:
        plans[sql] = plpy.prepare(sql, list(types))
    return plans[sql]


def read_config(plpy: Any, gd: MutableMapping) -> dict[str, Any]:
    return dict(plpy.execute(plan(plpy, gd, CONFIG_SQL))[0])


def provider_config(row: dict[str, Any], target: str) -> dict[str, Any]:
    """The provider settings for a target column, as ``get_provider`` takes them."""
    prefix = "" if target == "embedding" else "next_"
    if row[prefix + "embedding_provider"] is None:
        raise EmbeddingConfigError("no model change is in progress: there is no next model")
    options = row[prefix + "embedding_options"]
    config = {
        "provider": row[prefix + "embedding_provider"],
        "model": row[prefix + "embedding_model"],
        "dimensions": row[prefix + "embedding_dimensions"],
    }
    options = _json(options)
    overrides = sorted(RESERVED_OPTIONS & options.keys())
    if overrides:  # they would embed with another model than the config says
        raise EmbeddingConfigError(
            f"{prefix}embedding_options must not set {', '.join(overrides)}: "
            f"use the {prefix}embedding_* columns"
        )
    config.update(options)
    return config


RESERVED_OPTIONS = frozenset({"provider", "model", "dimensions"})


def is_blank(text: str) -> bool:
    """True for text of whitespace and invisible format characters (zero-width spaces)."""
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in text)


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def model_key(config: dict[str, Any]) -> str:
    """Names a model for the query cache: provider, model, dimensions and server."""
    key = f"{config['provider']}/{config['model']}/{config['dimensions']}"
    if config.get("base_url"):
        key += f"@{config['base_url']}"
    return key


def api_key(plpy: Any, gd: MutableMapping, config: dict[str, Any]) -> str | None:
    """The provider's API key, if it was set for the server config names (a key goes to
    the base_url of pgseek.set_api_key only, whatever the configuration says)."""
    if config["provider"] == "local":
        return None
    rows = plpy.execute(
        plan(
            plpy,
            gd,
            "select api_key, base_url from pgseek.provider_secrets where provider = $1",
            ["text"],
        ),
        [config["provider"]],
    )
    if not rows or _server(rows[0]["base_url"]) != _server(config.get("base_url")):
        return None
    return rows[0]["api_key"]


def _server(base_url: str | None) -> str:
    return (base_url or DEFAULT_BASE_URL).rstrip("/")


def with_retry_defaults(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    if config["provider"] == "local":
        return config
    return {**defaults, **config}


def live_configs(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The provider configurations in use: the current model's and, during a model
    change, the next model's, each as queries and as the worker use it. The backend's
    cache (``GD``) keeps the providers of these only."""
    configs = []
    for target in TARGETS:
        try:
            config = provider_config(settings, target)
        except EmbeddingConfigError:  # no model change, or options the target refuses
            continue
        for defaults in (QUERY_RETRY_DEFAULTS, WORKER_RETRY_DEFAULTS):
            configs.append(with_retry_defaults(config, defaults))
    return configs


def embedder_for(plpy: Any, gd: MutableMapping, settings: dict[str, Any], config: dict) -> Any:
    """The cached provider for ``config``, dropping the cached providers of every
    configuration no longer in ``settings``."""
    return cached_provider(
        gd, config, api_key=api_key(plpy, gd, config), live=live_configs(settings)
    )


def get_embedder(plpy: Any, gd: MutableMapping, target: str = "embedding", retry=None):
    """The provider for ``target`` ('embedding' or 'embedding_next'), and its config."""
    settings = read_config(plpy, gd)
    config = provider_config(settings, target)
    config = with_retry_defaults(config, retry or QUERY_RETRY_DEFAULTS)
    return embedder_for(plpy, gd, settings, config), config


def format_vector(values: Sequence[float]) -> str:
    return "[" + ",".join(f"{float(v):.8g}" for v in values) + "]"


def embed_checked(embedder: Any, config: dict[str, Any], texts: list[str]) -> list[str]:
    """Embed texts and check the answer's shape; vectors as pgvector text."""
    vectors = embedder.embed(texts)
    if len(vectors) != len(texts):
        raise PermanentEmbeddingError(
            f"provider returned {len(vectors)} embeddings for {len(texts)} texts"
        )
    for vector in vectors:
        if len(vector) != config["dimensions"]:
            raise PermanentEmbeddingError(
                f"provider returned {len(vector)} dimensions, "
                f"{config['model']} is configured for {config['dimensions']}"
            )
    return [format_vector(v) for v in vectors]


def raise_sql_error(plpy: Any, exc: Exception, what: str) -> None:
    """Re-raise an embedding failure as a PostgreSQL error with a proper SQLSTATE."""
    if isinstance(exc, EmbeddingConfigError):
        plpy.error(f"{what}: {exc}", sqlstate=SQLSTATE_CONFIG)
    plpy.error(
        f"{what}: {exc}",
        hint="Check the provider (README.md, Embeddings); documents are queued, not lost.",
        sqlstate=SQLSTATE_PROVIDER,
    )


def embed_texts(plpy: Any, gd: MutableMapping, texts: Sequence[str | None], target: str) -> list:
    """Embed texts for storage (no cache); None stays None. Raises SQL errors."""
    wanted = [t for t in texts if t is not None]
    if not wanted:
        return [None] * len(texts)
    try:
        embedder, config = get_embedder(plpy, gd, target)
        vectors = iter(embed_checked(embedder, config, wanted))
    except EmbeddingError as exc:
        raise_sql_error(plpy, exc, "embedding failed")
    return [None if t is None else next(vectors) for t in texts]


class CacheWritable:
    """Whether this transaction may write the query cache (WRITABLE_SQL); asked once, and
    only when a write is due (a cache hit that needs no refresh asks nothing)."""

    def __init__(self, plpy: Any, gd: MutableMapping):
        self.plpy, self.gd, self.answer = plpy, gd, None

    def __call__(self) -> bool:
        if self.answer is None:
            self.answer = self.plpy.execute(plan(self.plpy, self.gd, WRITABLE_SQL))[0]["writable"]
        return self.answer


def query_embeddings(plpy: Any, gd: MutableMapping, texts: Sequence[str | None]) -> list:
    """Embed query texts with the current model, through the query-embedding cache."""
    try:
        embedder, config = get_embedder(plpy, gd)
    except EmbeddingError as exc:
        raise_sql_error(plpy, exc, "embedding failed")
    key = model_key(config)
    writable = CacheWritable(plpy, gd)
    results: list[str | None] = [None] * len(texts)
    misses: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        if text is None:
            continue
        digest = hashlib.sha256(text.encode()).digest()
        rows = plpy.execute(plan(plpy, gd, CACHE_GET_SQL, ["text", "bytea"]), [key, digest])
        if rows:
            results[i] = rows[0]["embedding"]
            if rows[0]["stale"] and writable():
                plpy.execute(plan(plpy, gd, CACHE_REFRESH_SQL, ["text", "bytea"]), [key, digest])
        else:
            misses.setdefault(text, []).append(i)
    if misses:
        try:
            vectors = embed_checked(embedder, config, list(misses))
        except EmbeddingError as exc:
            raise_sql_error(plpy, exc, "query embedding failed")
        for text, vector in zip(misses, vectors, strict=True):
            for i in misses[text]:
                results[i] = vector
            if writable():
                digest = hashlib.sha256(text.encode()).digest()
                plpy.execute(
                    plan(plpy, gd, CACHE_PUT_SQL, ["text", "bytea", "text"]),
                    [key, digest, vector],
                )
    return results


def backoff_seconds(
    attempts: int,
    base: float,
    cap: float,
    retry_after: float | None,
    jitter: Callable = random.random,
) -> float:
    """Delay before the next attempt: exponential from ``base``, capped, with ±20% jitter;
    a server's Retry-After wins when it is longer."""
    delay = min(base * 2 ** max(attempts - 1, 0), cap) * (0.8 + 0.4 * jitter())
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


class Batch:
    """The queue entries of one target claimed by one worker call."""

    def __init__(self, target: str):
        self.target = target
        self.entries: dict[Any, list[dict]] = {}  # document_id -> claimed entries
        self.texts: dict[Any, tuple[str, bytes]] = {}  # document_id -> (content, hash)

    def add(self, row: dict) -> None:
        self.entries.setdefault(row["document_id"], []).append(row)
        self.texts[row["document_id"]] = (row["content"], row["content_hash"])


def process_queue(plpy: Any, gd: MutableMapping, max_rows: int) -> int:
    """Embed up to ``max_rows`` ready queue entries; returns documents embedded."""
    if max_rows is None or max_rows < 1 or max_rows > 10000:
        plpy.error(
            f"max_rows must be between 1 and 10000, got {max_rows}", sqlstate=SQLSTATE_CONFIG
        )
    claimed = plpy.execute(plan(plpy, gd, CLAIM_SQL, ["int4"]), [max_rows])
    if not claimed:
        return 0
    settings = read_config(plpy, gd)
    batches: dict[str, Batch] = {}
    for row in claimed:
        batches.setdefault(row["target"], Batch(row["target"])).add(row)
    embedded = 0
    for batch in batches.values():
        embedded += _process_batch(plpy, gd, settings, batch)
    _prune_batch_log(plpy, gd)
    return embedded


def _process_batch(plpy: Any, gd: MutableMapping, settings: dict, batch: Batch) -> int:
    started = time.perf_counter()
    ids = list(batch.texts)
    done: dict[Any, str] = {}
    failed: dict[Any, EmbeddingError] = {}
    model = "?"
    try:
        config = with_retry_defaults(provider_config(settings, batch.target), WORKER_RETRY_DEFAULTS)
        model = model_key(config)
        embedder = embedder_for(plpy, gd, settings, config)
        texts = [batch.texts[i][0] for i in ids]
        try:
            done = dict(zip(ids, embed_checked(embedder, config, texts), strict=True))
        except PermanentEmbeddingError:
            if len(ids) == 1:
                raise
            # One bad text must not sink the batch: retry each on its own.
            for doc_id, text in zip(ids, texts, strict=True):
                try:
                    done[doc_id] = embed_checked(embedder, config, [text])[0]
                except EmbeddingError as exc:
                    failed[doc_id] = exc
    except EmbeddingError as exc:
        failed = dict.fromkeys(ids, exc)
    except Exception as exc:  # an unexpected failure is retried, then dead-lettered
        failed = dict.fromkeys(ids, RetryableEmbeddingError(f"{type(exc).__name__}: {exc}"))
    if done:
        _write(plpy, gd, batch, done)
    if failed:
        _fail(plpy, gd, settings, batch, failed)
    plpy.execute(
        plan(plpy, gd, BATCH_LOG_SQL, ["text", "text", "int4", "int4", "float8"]),
        [batch.target, model, len(done), len(failed), time.perf_counter() - started],
    )
    return len(done)


def _write(plpy: Any, gd: MutableMapping, batch: Batch, done: dict[Any, str]) -> None:
    ids = list(done)
    hashes = [batch.texts[i][1] for i in ids]
    plpy.execute(
        plan(plpy, gd, WRITE_SQL[batch.target], ["uuid[]", "text[]", "bytea[]"]),
        [ids, [done[i] for i in ids], hashes],
    )
    entry_ids = [e["id"] for i in ids for e in batch.entries[i]]
    plpy.execute(
        plan(plpy, gd, DONE_SQL, ["int8[]", "uuid[]", "bytea[]", "text"]),
        [entry_ids, ids, hashes, batch.target],
    )
    plpy.execute(
        plan(plpy, gd, CLEARED_SQL, ["uuid[]", "bytea[]", "text"]), [ids, hashes, batch.target]
    )


def _fail(plpy, gd, settings: dict, batch: Batch, failed: dict[Any, EmbeddingError]) -> None:
    retry_ids, retry_errors, retry_delays = [], [], []
    dead_ids, dead_errors = [], []
    for doc_id, exc in failed.items():
        message = f"{type(exc).__name__}: {exc}"[:2000]
        for entry in batch.entries[doc_id]:
            attempts = entry["attempts"] + 1
            permanent = not isinstance(exc, RetryableEmbeddingError)
            if permanent or attempts >= settings["queue_max_attempts"]:
                dead_ids.append(entry["id"])
                dead_errors.append(message)
            else:
                retry_ids.append(entry["id"])
                retry_errors.append(message)
                retry_delays.append(
                    backoff_seconds(
                        attempts,
                        settings["retry_delay"],
                        settings["retry_max_delay"],
                        getattr(exc, "retry_after", None),
                    )
                )
    if retry_ids:
        plpy.execute(
            plan(plpy, gd, RETRY_SQL, ["int8[]", "text[]", "float8[]"]),
            [retry_ids, retry_errors, retry_delays],
        )
    if dead_ids:
        plpy.execute(plan(plpy, gd, DEAD_LETTER_SQL, ["int8[]", "text[]"]), [dead_ids, dead_errors])


def _prune_batch_log(plpy: Any, gd: MutableMapping) -> None:
    """Delete batch-log rows older than a week, at most once an hour per backend."""
    now = time.monotonic()
    if now - gd.get("pgseek.batch_log_pruned", -3600.0) < 3600:
        return
    gd["pgseek.batch_log_pruned"] = now
    plpy.execute(
        f"delete from pgseek.embedding_batches where finished_at < now() - interval "
        f"'{BATCH_LOG_KEEP}'"
    )


def chunk(gd: MutableMapping, text: str, chunk_tokens: int, overlap_tokens: int) -> list:
    """Chunks of ``text`` as (chunk_index, content, start_char, end_char) tuples, sized
    with the local model's WordPiece tokenizer (loaded once per backend)."""
    from pgseek.chunking import chunk_text
    from pgseek.embeddings.tokenizer import load_token_counter

    counter = gd.get("pgseek.token_counter")
    if counter is None:
        counter = gd["pgseek.token_counter"] = load_token_counter()
    chunks = chunk_text(
        text, max_tokens=chunk_tokens, overlap_tokens=overlap_tokens, count_tokens=counter
    )
    return [tuple(c) for c in chunks]
