"""What every section of `make bench` shares: the run's context (server, corpus, sizes,
output directory), statistics, timing, the real embeddings the synthetic sets are built
from, and figures that state how they were made.

A section is a module scripts/bench_<name>.py with
    TITLE: str                                   the report heading
    run(ctx: Context) -> dict                    measurements, JSON-serialisable
    report(results: dict, ctx: Context) -> list[str]   markdown lines; figures via ctx.figure()
bench.py runs the sections in order and writes bench/report.md and bench/results.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
from benchdb import connect, database_exists, database_url, machine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "dbpedia-entity-5k"
DATA_DIR = ROOT / "bench" / "data"  # reusable generated data (git-ignored)
EVAL_DB = "pgseek_eval"  # scripts/evaluate.py's database: the corpus, embedded in pgseek


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


@dataclass
class Context:
    server_url: str  # DATABASE_URL: the server; sections create databases of their own
    corpus: Path
    quick: bool
    out: Path
    rounds: int
    command: str
    started: float = field(default_factory=time.monotonic)
    _real: np.ndarray | None = None

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

    def real_vectors(self) -> np.ndarray:
        """Real 384-d embeddings of the corpus, made by pgseek's in-database model: from
        evaluate.py's pgseek_eval database when it holds the whole corpus embedded (make
        eval loads it; bench runs it first), else the first passages embedded here."""
        if self._real is not None:
            return self._real
        cache = DATA_DIR / ("real_vectors_quick.npy" if self.quick else "real_vectors.npy")
        if cache.exists():
            self._real = np.load(cache)
            return self._real
        vectors = None
        if not self.quick and database_exists(self.server_url, EVAL_DB):
            with connect(self.url(EVAL_DB)) as conn:
                rows = conn.execute(
                    "select embedding::text from pgseek.documents where embedding is not null"
                    " order by metadata ->> 'beir_id'"
                ).fetchall()
            if len(rows) >= 1000:
                vectors = np.array([json.loads(r[0]) for r in rows], dtype=np.float32)
        if vectors is None:
            passages = self.passages(300 if self.quick else 2000)
            log(f"embedding {len(passages)} passages in the database for real vectors")
            vectors = embed_in_database(self.server_url, passages)
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
        self._real = vectors
        return vectors

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


def embed_in_database(server_url: str, passages: list[str]) -> np.ndarray:
    """Embeddings of passages by pgseek.compute_embeddings() in a scratch database."""
    from benchdb import create_database

    url = create_database(server_url, "pgseek_bench_vectors")
    vectors = []
    with connect(url) as conn:
        for i in range(0, len(passages), 64):
            rows = conn.execute(
                "select e::text from unnest(pgseek.compute_embeddings(%s)) as e",
                (passages[i : i + 64],),
            ).fetchall()
            vectors.extend(json.loads(r[0]) for r in rows)
    with connect(database_url(server_url, "postgres")) as conn:
        conn.execute("drop database if exists pgseek_bench_vectors with (force)")
    return np.array(vectors, dtype=np.float32)


def synthetic_vectors(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n unit vectors that keep the real set's distribution: each is a random real vector
    plus Gaussian noise scaled by the real vectors' per-dimension spread (0.5 sd), then
    renormalised. The real vectors come first, unchanged, while n allows. Documented in
    the report; the same seed gives the same set."""
    rng = np.random.default_rng(seed)
    if n <= len(real):
        return real[:n].copy()
    spread = real.std(axis=0)
    base = real[rng.integers(0, len(real), n - len(real))]
    noisy = base + rng.standard_normal(base.shape).astype(np.float32) * (0.5 * spread)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return np.vstack([real, noisy.astype(np.float32)])


def query_vectors(real: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """n query vectors drawn like synthetic_vectors' (a real vector plus noise), never
    identical to a stored vector."""
    rng = np.random.default_rng(seed)
    spread = real.std(axis=0)
    base = real[rng.integers(0, len(real), n)]
    q = base + rng.standard_normal(base.shape).astype(np.float32) * (0.5 * spread)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def copy_vectors(
    conn: psycopg.Connection, vectors: np.ndarray, metadata: Callable[[int], str] | None = None
) -> None:
    """COPY rows with precomputed embeddings into pgseek.documents (embedding_mode must be
    'off' or the rows carry vectors: the queue skips them)."""
    cols = "content, embedding" + (", metadata" if metadata else "")
    with conn.cursor() as cur, cur.copy(f"copy pgseek.documents ({cols}) from stdin") as cp:
        for i, v in enumerate(vectors):
            row = [f"synthetic document {i}", vector_literal(v)]
            if metadata:
                row.append(metadata(i))
            cp.write_row(row)
