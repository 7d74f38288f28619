"""What every section of `make bench` shares: the run's context (server, corpus, sizes,
output directory), statistics, timing, the real embeddings of the corpus, the synthetic
vector sets scaled from them, the databases holding those sets, and figures that state how
they were made.

A section is a module scripts/bench_<name>.py with
    TITLE: str                                   the report heading
    run(ctx: Context) -> dict                    measurements, JSON-serialisable
    report(results: dict, ctx: Context) -> list[str]   markdown lines; figures via ctx.figure()
bench.py runs the sections in order and writes bench/report.md and bench/results.json.

Data that takes long to make is kept between runs: the corpus and query embeddings in
.build/bench/ (keyed by the texts), and each loaded vector set in a database of its own,
pgseek_bench_<rows>, stamped with the key of the data it holds (reused when it matches).
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
from benchdb import (
    MigrationFailed,
    connect,
    create_database,
    database_exists,
    database_url,
    machine,
    migrate,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "dbpedia-entity-5k"
DATA_DIR = ROOT / ".build" / "bench"  # reusable generated data (make clean removes it)
EVAL_DB = "pgseek_eval"  # scripts/evaluate.py's database: the corpus, embedded in pgseek
QUICK_DOCUMENTS = 500  # real documents a quick run embeds (the whole corpus otherwise)
DIMS = 384

# The hand-written k-nearest-neighbour query on pgseek.documents: the expression and the
# predicate of pgseek's partial expression index (sql/020-vector-index.sql), without
# which PostgreSQL cannot use it. Parameters: the query vector (text), k.
RAW_KNN = (
    "select id from pgseek.documents where vector_dims(embedding) = 384"
    " order by embedding::vector(384) <=> %s::vector(384) limit %s"
)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    """p50 (median), p95 and the count of a list of measurements."""
    return {"p50": statistics.median(values), "p95": percentile(values, 95), "n": len(values)}


def timed_ms(conn: psycopg.Connection, sql: str, params=None) -> tuple[float, list]:
    """(milliseconds, rows) of one query, rows fetched: the client's round trip."""
    started = time.perf_counter()
    rows = conn.execute(sql, params).fetchall()
    return (time.perf_counter() - started) * 1000, rows


def vector_literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in v) + "]"


def recall(found: Iterable, truth: Iterable) -> float:
    """The share of the true neighbours found (recall@k with k = len(truth))."""
    truth = list(truth)
    return len(set(found) & set(truth)) / len(truth) if truth else 1.0


def relation_mb(conn: psycopg.Connection, relation: str, total: bool = False) -> float:
    size = "pg_total_relation_size" if total else "pg_relation_size"
    return round(
        float(conn.execute(f"select {size}(%s::regclass)", (relation,)).fetchone()[0]) / 2**20, 1
    )


@dataclass
class Corpus:
    """The real documents and queries the benchmarks start from, with their embeddings
    by pgseek's in-database model, row for row."""

    key: str  # a digest of the texts: names the caches built from them
    ids: list[str]
    passages: list[str]  # "Title. text", as evaluate.py stores them
    titles: list[str]
    queries: list[str]
    vectors: np.ndarray  # (documents, 384), unit length
    query_vectors: np.ndarray  # (queries, 384)
    source: str  # where the embeddings came from, for the report


@dataclass
class Context:
    server_url: str  # DATABASE_URL: the server; sections create databases of their own
    corpus: Path
    quick: bool
    out: Path
    rounds: int
    command: str
    started: float = field(default_factory=time.monotonic)
    shared: dict = field(default_factory=dict)  # what one section leaves for a later one
    _corpus: Corpus | None = None
    _synthesizer: Synthesizer | None = None

    @property
    def has_corpus(self) -> bool:
        return (self.corpus / "corpus.jsonl").is_file()

    def url(self, dbname: str) -> str:
        return database_url(self.server_url, dbname)

    def passages(self, limit: int) -> list[str]:
        """Up to `limit` real passages: the BEIR corpus ("Title. text"), or where it is
        missing the PostgreSQL manual that make demo loads (postgresql-doc)."""
        if self.has_corpus:
            from evaluate import document_content

            passages = []
            with (self.corpus / "corpus.jsonl").open() as f:
                for line in f:
                    passages.append(document_content(json.loads(line)))
                    if len(passages) == limit:
                        break
            return passages
        from demo import manual_directory, read_page

        passages = []
        for path in sorted(manual_directory().glob("*.html")):
            paragraphs = read_page(path).text.split("\n\n")
            passages.extend(p for p in paragraphs if 200 <= len(p) <= 1000)
            if len(passages) >= limit:
                break
        return passages[:limit]

    def corpus_set(self) -> Corpus:
        """The corpus (QUICK_DOCUMENTS of it in a quick run) and its queries, embedded:
        from .build/bench/ when made before, else from evaluate.py's pgseek_eval (a full
        run loads it when missing, as make eval does; the quality section then reuses
        it), else (a quick run) embedded here in a scratch database.
        Without the BEIR corpus: PostgreSQL manual paragraphs, and their first words as
        queries."""
        if self._corpus is None:
            self._corpus = load_corpus(self)
        return self._corpus

    def real_vectors(self) -> np.ndarray:
        return self.corpus_set().vectors

    def synthesizer(self) -> Synthesizer:
        if self._synthesizer is None:
            self._synthesizer = Synthesizer(self.corpus_set())
        return self._synthesizer

    def figure(self, name: str, draw: Callable, caption: str) -> str:
        """Draws a matplotlib figure with draw(fig), stamps it with the machine, the run's
        command and caption (data size, settings), saves out/name; returns a markdown
        image line."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(7, 4.2))
        draw(fig)
        fig.text(
            0.01,
            0.005,
            f"{caption}\n{machine()}; `{self.command}`",
            fontsize=6,
            color="#555555",
            va="bottom",
        )
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.savefig(self.out / name, dpi=110)
        plt.close(fig)
        return f"![{caption}]({name})"


def read_texts(ctx: Context) -> tuple[list[str], list[str], list[str], list[str]]:
    """(ids, passages, titles, queries) of the corpus, or of the manual without it."""
    limit = QUICK_DOCUMENTS if ctx.quick else None
    if ctx.has_corpus:
        from evaluate import document_content, read_jsonl

        docs = read_jsonl(ctx.corpus / "corpus.jsonl")[:limit]
        queries = [q["text"] for q in read_jsonl(ctx.corpus / "queries.jsonl")]
        return (
            [d["_id"] for d in docs],
            [document_content(d) for d in docs],
            [d.get("title", "") for d in docs],
            queries,
        )
    count = limit or 5000
    passages = ctx.passages(count + 50)
    docs, held_out = passages[:-50], passages[-50:]
    return (
        [f"manual-{i}" for i in range(len(docs))],
        docs,
        [" ".join(p.split()[:3]) for p in docs],
        [" ".join(p.split()[:8]) for p in held_out],
    )


def load_corpus(ctx: Context) -> Corpus:
    ids, passages, titles, queries = read_texts(ctx)
    digest = hashlib.sha256()
    for text in [*ids, *passages, *queries]:
        digest.update(text.encode() + b"\0")
    key = digest.hexdigest()[:16]
    cache = DATA_DIR / f"corpus-{key}.npz"
    if cache.exists():
        saved = np.load(cache)
        vectors, query_vectors = saved["vectors"], saved["query_vectors"]
        source = str(saved["source"])
    else:
        if ctx.has_corpus and not ctx.quick:
            ensure_eval_database(ctx)
        vectors = eval_database_vectors(ctx, ids, passages)
        source = f"{EVAL_DB}, make eval's database"
        if vectors is None:
            log(f"embedding {len(passages)} passages in the database (once: kept in {DATA_DIR})")
            source = "embedded by the benchmark in a scratch database"
        vectors, query_vectors = embed_in_database(
            ctx.server_url, passages if vectors is None else [], queries, vectors
        )
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(cache, vectors=vectors, query_vectors=query_vectors, source=source)
    return Corpus(key, ids, passages, titles, queries, vectors, query_vectors, source)


def ensure_eval_database(ctx: Context) -> dict:
    """evaluate.py's pgseek_eval holding the whole corpus embedded by pgseek's own path
    (COPY, queue, worker): reused when it does, loaded otherwise (minutes)."""
    from evaluate import load_dataset, prepare_database

    if not database_exists(ctx.server_url, EVAL_DB):
        log(f"loading the corpus into {EVAL_DB} through pgseek's embedding queue (once)")
    return prepare_database(ctx.server_url, load_dataset(ctx.corpus.resolve()), reload=False)


def eval_database_vectors(ctx: Context, ids: list[str], passages: list[str]) -> np.ndarray | None:
    """The embeddings of these documents in pgseek_eval, in order, when it holds every one
    of them with the same content, embedded; else None."""
    if not ctx.has_corpus or not database_exists(ctx.server_url, EVAL_DB):
        return None
    with connect(ctx.url(EVAL_DB)) as conn:
        rows = conn.execute(
            "select metadata ->> 'beir_id', content, embedding::text from pgseek.documents"
            " where embedding is not null and vector_dims(embedding) = %s",
            (DIMS,),
        ).fetchall()
    stored = {beir_id: (content, vector) for beir_id, content, vector in rows}
    if not all(stored.get(i, ("",))[0] == p for i, p in zip(ids, passages, strict=True)):
        return None
    log(f"real vectors: {len(ids)} documents embedded in {EVAL_DB}")
    return np.array([json.loads(stored[i][1]) for i in ids], dtype=np.float32)


def embed_in_database(
    server_url: str, passages: list[str], queries: list[str], vectors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(passage embeddings, query embeddings) by pgseek in a scratch database: passages
    with pgseek.compute_embeddings() (the documents' path), queries with pgseek.embed()
    (the queries' path). `vectors` given: only the queries are embedded."""
    url = create_database(server_url, "pgseek_bench_vectors")
    embedded = []
    with connect(url) as conn:
        started = time.monotonic()
        for i in range(0, len(passages), 64):
            rows = conn.execute(
                "select e::text from unnest(pgseek.compute_embeddings(%s)) as e",
                (passages[i : i + 64],),
            ).fetchall()
            embedded.extend(json.loads(r[0]) for r in rows)
            if (i // 64) % 10 == 9:
                rate = len(embedded) / (time.monotonic() - started)
                log(f"  embedded {len(embedded)} / {len(passages)} ({rate:.0f}/s)")
        rows = conn.execute(
            "select e::text from unnest(pgseek.embed(%s::text[])) as e", (queries,)
        ).fetchall()
    with connect(database_url(server_url, "postgres")) as conn:
        conn.execute("drop database if exists pgseek_bench_vectors with (force)")
    query_vectors = np.array([json.loads(r[0]) for r in rows], dtype=np.float32)
    if vectors is None:
        vectors = np.array(embedded, dtype=np.float32)
    return vectors, query_vectors


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical
    distribution functions (0 = identical, 1 = disjoint)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    gap = np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(
        b, grid, side="right"
    ) / len(b)
    return float(np.abs(gap).max())


def quantiles(values: np.ndarray) -> dict[str, float]:
    points = np.percentile(values, [5, 25, 50, 75, 95])
    return {f"p{q}": round(float(v), 3) for q, v in zip((5, 25, 50, 75, 95), points, strict=True)}


def nearest_similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """For each row of a, the cosine similarity of its nearest row of b (of a itself,
    excluding the row, when b is None). Rows are unit vectors."""
    sims = a @ (a if b is None else b).T
    if b is None:
        np.fill_diagonal(sims, -np.inf)
    return sims.max(axis=1)


@dataclass
class Chunk:
    start: int  # the row number of the first row
    vectors: np.ndarray
    base: np.ndarray  # the real document each row comes from (its vector's and text's)
    neighbour: np.ndarray  # the real neighbour it moved towards; -1 for a real row
    group: np.ndarray  # 0..999, uniform: metadata for filters matching 50% to 0.1%


class Synthesizer:
    """Scales the real embeddings to any number of rows while keeping their distribution.

    Rows 0 to len(real) - 1 are the real vectors, unchanged. Every later row takes a
    random real vector b (its base), moves it a random fraction, up to 0.5, of the way
    towards one of b's 10 nearest real neighbours (so it stays on the corpus' manifold,
    nearer its base), adds Gaussian noise with the corpus' covariance scaled to b's local
    neighbourhood (b's distance to its nearest real neighbour, times a factor), and is
    renormalised to unit length. The factor is calibrated so that a synthetic sample as
    large as the real set has the real set's median nearest-neighbour similarity;
    distribution_check() measures how close the whole distribution comes. Rows are made
    in chunks seeded by their position, so a smaller set is a prefix of a larger one
    (the 10K rows are the first rows of the 100K, which are the first of the 1M)."""

    VERSION = 1  # part of a loaded set's key: bump when the method changes
    NEIGHBOURS = 10
    MAX_STEP = 0.5
    CHUNK = 10_000
    SEED = 20240

    def __init__(self, corpus: Corpus):
        real = corpus.vectors
        self.real = real
        sims = real @ real.T
        np.fill_diagonal(sims, -np.inf)
        self.knn = np.argpartition(-sims, self.NEIGHBOURS, axis=1)[:, : self.NEIGHBOURS]
        self.real_nn = sims.max(axis=1)
        del sims
        # the chord length to the nearest neighbour: the local scale of the noise
        self.radius = np.sqrt(np.maximum(2 - 2 * self.real_nn, 1e-6)).astype(np.float32)
        cov = np.cov(real.T.astype(np.float64))
        factor = np.linalg.cholesky(cov + 1e-6 * np.eye(len(cov)))
        # z @ shape has the corpus' covariance shape and an expected squared norm of 1
        self.shape = (factor.T / np.sqrt(np.trace(cov))).astype(np.float32)
        cache = DATA_DIR / f"noise-{corpus.key}-v{self.VERSION}.json"
        if cache.exists():
            self.scale = json.loads(cache.read_text())["scale"]
        else:
            self.scale = self.calibrate()
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"scale": self.scale}) + "\n")

    def synthetic(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, ...]:
        n, d = self.real.shape
        base = rng.integers(0, n, count)
        neighbour = self.knn[base, rng.integers(0, self.NEIGHBOURS, count)]
        step = rng.uniform(0, self.MAX_STEP, (count, 1)).astype(np.float32)
        noise = rng.standard_normal((count, d), dtype=np.float32) @ self.shape
        v = self.real[base] + step * (self.real[neighbour] - self.real[base])
        v += (self.scale * self.radius[base])[:, None] * noise
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype(np.float32), base, neighbour

    def sample(self, count: int, seed: int) -> np.ndarray:
        return self.synthetic(np.random.default_rng([self.SEED, seed]), count)[0]

    def calibrate(self) -> float:
        """The noise factor that gives a synthetic sample the size of the real set the
        real set's median nearest-neighbour similarity (bisection: more noise, lower)."""
        target = float(np.median(self.real_nn))
        low, high = 0.05, 3.0
        for _ in range(14):
            self.scale = (low + high) / 2
            sample = self.sample(len(self.real), seed=1)
            if np.median(nearest_similarity(sample)) > target:
                low = self.scale
            else:
                high = self.scale
        return round((low + high) / 2, 4)

    def chunks(self, rows: int) -> Iterable[Chunk]:
        """The first `rows` rows, in chunks: the real rows, then CHUNK synthetic rows at a
        time (each chunk seeded by its number, the last one cut)."""
        n = len(self.real)
        groups = np.random.default_rng([self.SEED, 2])
        real = min(rows, n)
        yield Chunk(
            0,
            self.real[:real],
            np.arange(real),
            np.full(real, -1),
            groups.integers(0, 1000, n)[:real],
        )
        for number, start in enumerate(range(n, rows, self.CHUNK)):
            rng = np.random.default_rng([self.SEED, 1000 + number])
            vectors, base, neighbour = self.synthetic(rng, self.CHUNK)
            group = rng.integers(0, 1000, self.CHUNK)
            count = min(self.CHUNK, rows - start)
            yield Chunk(start, vectors[:count], base[:count], neighbour[:count], group[:count])

    def generate(self, rows: int) -> np.ndarray:
        return np.vstack([c.vectors for c in self.chunks(rows)])

    def distribution_check(self, query_vectors: np.ndarray) -> dict:
        """How close synthetic vectors come to real ones, on samples of equal size (a
        denser set has nearer neighbours, so only equal sizes compare): nearest-neighbour
        similarity within each set, the similarity of random pairs, and each real query's
        nearest similarity in either set."""
        n = len(self.real)
        sample = self.sample(n, seed=2)
        rng = np.random.default_rng([self.SEED, 3])
        pairs = rng.integers(0, n, (20_000, 2))
        synthetic_nn = nearest_similarity(sample)
        real_pairs = (self.real[pairs[:, 0]] * self.real[pairs[:, 1]]).sum(1)
        synthetic_pairs = (sample[pairs[:, 0]] * sample[pairs[:, 1]]).sum(1)
        real_query = nearest_similarity(query_vectors, self.real)
        synthetic_query = nearest_similarity(query_vectors, sample)
        return {
            "sample": n,
            "scale": self.scale,
            "nn_real": quantiles(self.real_nn),
            "nn_synthetic": quantiles(synthetic_nn),
            "nn_ks": round(ks_distance(self.real_nn, synthetic_nn), 3),
            "pairs_real": quantiles(real_pairs),
            "pairs_synthetic": quantiles(synthetic_pairs),
            "pairs_ks": round(ks_distance(real_pairs, synthetic_pairs), 3),
            "query_real": quantiles(real_query),
            "query_synthetic": quantiles(synthetic_query),
            "query_ks": round(ks_distance(real_query, synthetic_query), 3),
        }


# --- loaded vector sets ------------------------------------------------------------------

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)


def copy_documents(
    conn: psycopg.Connection, contents: list[str], metadata: list[str], vectors: np.ndarray
) -> None:
    """Binary COPY of rows into pgseek.documents (content, metadata JSON, embedding):
    numpy writes the vectors' bytes, so a million rows take seconds on the client."""
    dims = vectors.shape[1]
    vector_head = struct.pack("!iHH", 4 + 4 * dims, dims, 0)  # pgvector's binary format
    big_endian = vectors.astype(">f4")
    sql = "copy pgseek.documents (content, metadata, embedding) from stdin (format binary)"
    with conn.cursor() as cur, cur.copy(sql) as cp:
        parts = [COPY_HEADER]
        for content, meta, vector in zip(contents, metadata, big_endian, strict=True):
            text = content.encode()
            meta_bytes = b"\x01" + meta.encode()  # jsonb's binary format: version 1, text
            parts.append(
                struct.pack("!hi", 3, len(text))
                + text
                + struct.pack("!i", len(meta_bytes))
                + meta_bytes
                + vector_head
                + vector.tobytes()
            )
            if len(parts) >= 2000:
                cp.write(b"".join(parts))
                parts = []
        parts.append(struct.pack("!h", -1))
        cp.write(b"".join(parts))


def chunk_rows(corpus: Corpus, chunk: Chunk) -> tuple[list[str], list[str]]:
    """Content and metadata of a chunk's rows. A real row keeps its passage; a synthetic
    row takes its base document's passage and the title of the neighbour its vector moved
    towards ("... See also: <title>."), so its text goes with its vector. Metadata: the
    base's BEIR id and nested groups for filters: group_2 (50% of rows each), group_10,
    group_100 and group_1000 (0.1%), from one uniform number."""
    contents, metadata = [], []
    for base, neighbour, group in zip(chunk.base, chunk.neighbour, chunk.group, strict=True):
        text = corpus.passages[base]
        if neighbour >= 0:
            text = f"{text} See also: {corpus.titles[neighbour]}."
        contents.append(text)
        g = int(group)
        metadata.append(
            json.dumps(
                {
                    "base": corpus.ids[base],
                    "group_2": g % 2,
                    "group_10": g % 10,
                    "group_100": g % 100,
                    "group_1000": g,
                }
            )
        )
    return contents, metadata


def filter_for(share: float) -> str:
    """The metadata filter (JSON) matching about `share` of a loaded set's rows."""
    groups = round(1 / share)
    return json.dumps({f"group_{groups}": 0})


def vector_database(ctx: Context, rows: int) -> str:
    """The URL of pgseek_bench_<rows>: pgseek at head whose pgseek.documents holds the
    first `rows` rows of the synthetic set (real passages, see chunk_rows), with the text
    and metadata indexes and text statistics but no vector index (the sections build
    those). Reused when its stamp names the same data; loaded afresh otherwise."""
    corpus, synthesizer = ctx.corpus_set(), ctx.synthesizer()
    name = f"pgseek_bench_{rows}"
    url = ctx.url(name)
    key = (
        f"corpus {corpus.key}, synthetic method {Synthesizer.VERSION}, "
        f"noise {synthesizer.scale}, {rows} rows, keyword postings"
    )
    if database_exists(ctx.server_url, name) and stamp(url) == key:
        log(f"reusing {name}: it holds the same {rows:,} rows")
        return url
    log(f"creating {name} and loading {rows:,} rows")
    create_database(ctx.server_url, name)
    started = time.monotonic()
    with connect(url) as conn:
        conn.execute("update pgseek.config set embedding_mode = 'off'")
        indexes = conn.execute(
            "select indexname, indexdef from pg_indexes where schemaname = 'pgseek'"
            " and tablename = 'documents' and indexname <> 'documents_pkey'"
        ).fetchall()
        for index, _ in indexes:  # built once after the load: much faster
            conn.execute(f"drop index pgseek.{index}")
    load_rows(ctx, url, rows)
    with connect(url) as conn:
        for index, ddl in indexes:
            if not index.startswith("documents_embedding_"):
                log(f"  building {index}")
                conn.execute(ddl)
        # the load ran without triggers: the keyword postings are filled here, at once
        log("  filling the keyword postings")
        conn.execute("select pgseek.rebuild_text_postings()")
        conn.execute("vacuum (analyze) pgseek.documents, pgseek.text_postings")
        conn.execute("select pgseek.refresh_text_stats()")
        conn.execute("update pgseek.config set embedding_mode = 'async'")
        conn.execute("create schema bench")
        conn.execute(
            "create table bench.dataset (key text not null, rows bigint not null,"
            " load_seconds double precision, loaded_at timestamptz not null default now())"
        )
        conn.execute(
            "insert into bench.dataset (key, rows, load_seconds) values (%s, %s, %s)",
            (key, rows, time.monotonic() - started),
        )
    log(f"loaded {name} in {time.monotonic() - started:.0f} s")
    return url


def load_rows(ctx: Context, url: str, rows: int) -> None:
    """COPY the set's first `rows` rows into pgseek.documents on two connections (the
    server's work, to_tsvector and TOAST, then uses both cores), with triggers off
    (session_replication_role = replica: the rows are valid 384-d vectors, and no queue
    entries are wanted; vector_database() fills the keyword postings afterwards, in one
    sorted pass), printing progress."""
    corpus, synthesizer = ctx.corpus_set(), ctx.synthesizer()
    chunks: queue.Queue = queue.Queue(maxsize=4)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with connect(url, options="-c session_replication_role=replica") as conn:
                while (chunk := chunks.get()) is not None:
                    contents, metadata = chunk_rows(corpus, chunk)
                    copy_documents(conn, contents, metadata, chunk.vectors)
                    progress(len(contents))
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            while chunks.get() is not None:  # let the producer finish
                pass

    started, done, reported = time.monotonic(), 0, 0
    lock = threading.Lock()

    def progress(count: int) -> None:
        nonlocal done, reported
        with lock:
            done += count
            if done - reported >= max(rows // 10, 50_000) or done == rows:
                reported = done
                rate = done / (time.monotonic() - started)
                log(f"  {done:,} / {rows:,} rows ({rate:,.0f} rows/s)")

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for chunk in synthesizer.chunks(rows):
        chunks.put(chunk)
    for _ in threads:
        chunks.put(None)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def stamp(url: str) -> str | None:
    """The key of the data a bench database holds, after migrating it to head (the
    functions under test may have changed); None when it has none or cannot migrate."""
    try:
        migrate(url)
        with connect(url) as conn:
            row = conn.execute(
                "select key from bench.dataset where to_regclass('bench.dataset') is not null"
            ).fetchone()
    except (MigrationFailed, psycopg.Error):
        return None
    return row[0] if row else None


# --- vector indexes ----------------------------------------------------------------------

DEFAULT_INDEX = "documents_embedding_384_hnsw_cosine"  # pgseek's own (migration 0002)


def index_sql(name: str, method: str, options: str) -> str:
    """pgseek's vector index definition (sql/020-vector-index.sql) with other options."""
    return (
        f"create index {name} on pgseek.documents using {method}"
        f" ((embedding::vector(384)) vector_cosine_ops) with ({options})"
        " where vector_dims(embedding) = 384"
    )


def vector_indexes(conn: psycopg.Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select indexname from pg_indexes where schemaname = 'pgseek'"
            " and tablename = 'documents' and indexname like 'documents\\_embedding\\_%'"
            " order by indexname"
        )
    ]


def drop_vector_indexes(conn: psycopg.Connection, keep: str | None = None) -> None:
    for index in vector_indexes(conn):
        if index != keep:
            conn.execute(f"drop index pgseek.{index}")


def build_index(conn: psycopg.Connection, name: str, method: str, options: str) -> float:
    """Builds a vector index (index_sql) and returns its build time in seconds, also
    recorded in bench.index_builds: a later run that reuses the index reports it."""
    started = time.perf_counter()
    conn.execute(index_sql(name, method, options))
    seconds = time.perf_counter() - started
    conn.execute(
        "create table if not exists bench.index_builds (index_name text primary key,"
        " seconds double precision not null, built_at timestamptz not null default now())"
    )
    conn.execute(
        "insert into bench.index_builds (index_name, seconds) values (%s, %s)"
        " on conflict (index_name) do update set seconds = excluded.seconds, built_at = now()",
        (name, seconds),
    )
    return seconds


def recorded_build(conn: psycopg.Connection, name: str) -> float | None:
    """The build time build_index() recorded for an index that still exists."""
    if conn.execute("select to_regclass('bench.index_builds')").fetchone()[0] is None:
        return None
    row = conn.execute(
        "select seconds from bench.index_builds where index_name = %s", (name,)
    ).fetchone()
    return row[0] if row else None


def ensure_default_index(conn: psycopg.Connection) -> float | None:
    """pgseek's default HNSW index (m 16, ef_construction 64) as the only vector index;
    returns its build time when it had to be built (None when it was there)."""
    drop_vector_indexes(conn, keep=DEFAULT_INDEX)
    if DEFAULT_INDEX in vector_indexes(conn):
        return None
    log(f"building {DEFAULT_INDEX}")
    return build_index(conn, DEFAULT_INDEX, "hnsw", "m = 16, ef_construction = 64")


def explain(conn: psycopg.Connection, sql: str, params=None) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a query, as text, vector literals shortened."""
    rows = conn.execute("explain (analyze, buffers) " + sql, params).fetchall()
    text = "\n".join(r[0] for r in rows)
    return re.sub(r"'\[[-0-9.e,]{200,}\]'", "'[384 numbers]'", text)


def copy_vectors(
    conn: psycopg.Connection, vectors: np.ndarray, metadata: Callable[[int], str] | None = None
) -> None:
    """COPY rows with precomputed embeddings into pgseek.documents, in text format as a
    client would (embedding_mode must be 'off' or the rows carry vectors: the queue skips
    them)."""
    cols = "content, embedding" + (", metadata" if metadata else "")
    with conn.cursor() as cur, cur.copy(f"copy pgseek.documents ({cols}) from stdin") as cp:
        for i, v in enumerate(vectors):
            row = [f"synthetic document {i}", vector_literal(v)]
            if metadata:
                row.append(metadata(i))
            cp.write_row(row)
