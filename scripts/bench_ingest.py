"""Ingest: in-database embeddings. Raw model throughput inside PostgreSQL vs the full
trigger + queue + worker path on the same texts (with and without the vector index),
COPY of precomputed vectors, query-embedding latency, model load time and memory per
backend."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import psycopg
from benchdb import connect, create_database
from benchlib import Context, copy_vectors, log, summary

TITLE = "Ingest: in-database embeddings"
BENCH_DB = "pgseek_bench"


def backend_memory_kb(pid: int) -> dict[str, int]:
    """RSS and PSS of a backend process (PSS counts shared pages once per sharer)."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss"):
            values[name.lower()] = int(rest.split()[0])
    return values


def queue_round(conn: psycopg.Connection, passages: list[str]) -> tuple[float, float]:
    """COPY passages into an empty table, then drain the queue; returns (embedded docs/s,
    inserted rows/s)."""
    conn.execute("truncate pgseek.documents cascade")
    started = time.perf_counter()
    with conn.cursor() as cur, cur.copy("copy pgseek.documents (content) from stdin") as cp:
        for p in passages:
            cp.write_row((p,))
    insert_rate = len(passages) / (time.perf_counter() - started)
    started = time.perf_counter()
    while conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0]:
        pass
    rate = len(passages) / (time.perf_counter() - started)
    left = conn.execute("select queued, unaccounted from pgseek.embedding_status").fetchone()
    assert left == (0, 0), f"queue not drained: {left}"
    return rate, insert_rate


def run(ctx: Context) -> dict:
    passages = ctx.passages(200 if ctx.quick else 1000)
    rounds = ctx.rounds
    log(f"creating and migrating database {BENCH_DB}")
    url = create_database(ctx.server_url, BENCH_DB)
    results: dict = {"documents": len(passages), "rounds": rounds}
    avg_chars = statistics.mean(len(p) for p in passages)
    results["avg_chars"] = round(avg_chars)

    log("model load time and backend memory")
    loads, memory = [], []
    for _ in range(rounds):
        with connect(url) as conn:
            pid = conn.execute("select pg_backend_pid()").fetchone()[0]
            before = backend_memory_kb(pid)
            started = time.perf_counter()
            conn.execute("select pgseek.compute_embeddings(array['warm up'])")
            loads.append(time.perf_counter() - started)
            after = backend_memory_kb(pid)
            memory.append({k: after[k] - before[k] for k in after})
    results["model_load_seconds"] = summary(loads)
    results["backend_memory_added_mb"] = {
        k: round(statistics.median(m[k] for m in memory) / 1024, 1) for k in ("rss", "pss")
    }

    with connect(url) as conn:
        conn.execute("select pgseek.compute_embeddings(array['warm up'])")
        log(f"raw model throughput on {len(passages)} passages (batches of 64)")
        raw = []
        for _ in range(rounds):
            started = time.perf_counter()
            for i in range(0, len(passages), 64):
                conn.execute("select pgseek.compute_embeddings(%s)", (passages[i : i + 64],))
            raw.append(len(passages) / (time.perf_counter() - started))

        log("trigger + queue + worker throughput on the same passages")
        queue, inserts = [], []
        for _ in range(rounds):
            rate, insert_rate = queue_round(conn, passages)
            queue.append(rate)
            inserts.append(insert_rate)
        log("the same without the vector index (a bulk load, indexed afterwards)")
        index = conn.execute(
            "select indexname, indexdef from pg_indexes where schemaname = 'pgseek'"
            " and indexname like 'documents_embedding_%'"
        ).fetchone()
        conn.execute(f"drop index pgseek.{index[0]}")
        unindexed = [queue_round(conn, passages)[0] for _ in range(rounds)]
        conn.execute(index[1])
        results["raw_docs_per_second"] = summary(raw)
        results["queue_docs_per_second"] = summary(queue)
        results["queue_unindexed_docs_per_second"] = summary(unindexed)
        results["insert_rows_per_second"] = summary(inserts)
        results["queue_vs_raw"] = statistics.median(queue) / statistics.median(raw)
        results["queue_unindexed_vs_raw"] = statistics.median(unindexed) / statistics.median(raw)

        log("single query embedding latency (cached model)")
        misses, hits = [], []
        for i in range(20 * rounds):
            text = f"how do hnsw indexes trade recall for speed, variant {i}"
            started = time.perf_counter()
            conn.execute("select pgseek.embed(%s)", (text,)).fetchone()
            misses.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            conn.execute("select pgseek.embed(%s)", (text,)).fetchone()
            hits.append((time.perf_counter() - started) * 1000)
        results["query_ms_uncached"] = summary(misses)
        results["query_ms_cached"] = summary(hits)

        # 5000 rows into an empty table (each enters the HNSW graph one at a time, a few
        # hundred rows/s on 2 cores: 20,000 took two and a half minutes of the budget)
        results["copy_rows"] = 2000 if ctx.quick else 5000
        log(f"COPY of {results['copy_rows']} rows with precomputed vectors")
        vectors = ctx.synthesizer().generate(results["copy_rows"])
        conn.execute("update pgseek.config set embedding_mode = 'off'")
        copies = []
        for _ in range(rounds):
            conn.execute("truncate pgseek.documents cascade")
            started = time.perf_counter()
            copy_vectors(conn, vectors)
            copies.append(len(vectors) / (time.perf_counter() - started))
        conn.execute("update pgseek.config set embedding_mode = 'async'")
        results["copy_vectors_rows_per_second"] = summary(copies)
    return results


def report(r: dict, ctx: Context) -> list[str]:
    def draw(fig) -> None:
        ax = fig.add_subplot()
        labels = ["raw model\n(compute_embeddings)", "trigger + queue\n+ worker"]
        p50 = [r["raw_docs_per_second"]["p50"], r["queue_docs_per_second"]["p50"]]
        p95 = [r["raw_docs_per_second"]["p95"], r["queue_docs_per_second"]["p95"]]
        bars = ax.bar(labels, p50, color=["#7a9cc6", "#2f6db5"])
        ax.scatter(labels, p95, color="black", marker="_", s=400, label="p95 of runs", zorder=3)
        ax.bar_label(bars, fmt="%.1f")
        ax.set_ylabel("documents / second (median of runs)")
        ax.set_title(f"Embedding throughput, {r['documents']} passages", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)

    figure = ctx.figure(
        "ingest_throughput.png",
        draw,
        f"{r['documents']} passages (~{r['avg_chars']} chars), local all-MiniLM-L6-v2 int8, "
        f"{r['rounds']} runs",
    )
    return [
        f"Data: {r['documents']} passages (title + abstract, ~{r['avg_chars']} characters) "
        f"from `{ctx.corpus}`. Model: the local all-MiniLM-L6-v2 (int8 ONNX), 2 threads. "
        f"Runs: {r['rounds']}.",
        "",
        "| measure | p50 | p95 |",
        "|---|---|---|",
        f"| raw model, `pgseek.compute_embeddings()` in batches of 64 (docs/s) | "
        f"{r['raw_docs_per_second']['p50']:.1f} | {r['raw_docs_per_second']['p95']:.1f} |",
        f"| trigger + queue + `process_embedding_queue(64)` (docs/s) | "
        f"{r['queue_docs_per_second']['p50']:.1f} | {r['queue_docs_per_second']['p95']:.1f} |",
        f"| the same, table without its vector index (docs/s) | "
        f"{r['queue_unindexed_docs_per_second']['p50']:.1f} | "
        f"{r['queue_unindexed_docs_per_second']['p95']:.1f} |",
        f"| COPY into `pgseek.documents`, queueing included (rows/s) | "
        f"{r['insert_rows_per_second']['p50']:.0f} | {r['insert_rows_per_second']['p95']:.0f} |",
        f"| query embedding, `pgseek.embed(text)`, model loaded, not cached (ms) | "
        f"{r['query_ms_uncached']['p50']:.1f} | {r['query_ms_uncached']['p95']:.1f} |",
        f"| query embedding, cached (ms) | {r['query_ms_cached']['p50']:.2f} | "
        f"{r['query_ms_cached']['p95']:.2f} |",
        f"| COPY of {r['copy_rows']:,} rows with precomputed vectors into an empty table, "
        f"HNSW index in place (rows/s) | "
        f"{r['copy_vectors_rows_per_second']['p50']:.0f} | "
        f"{r['copy_vectors_rows_per_second']['p95']:.0f} |",
        f"| model load, first call in a new backend (s) | "
        f"{r['model_load_seconds']['p50']:.2f} | {r['model_load_seconds']['p95']:.2f} |",
        "",
        f"**Queue path / raw model: {r['queue_vs_raw']:.2f}** (target >= 0.90); without the "
        f"vector index: {r['queue_unindexed_vs_raw']:.2f}. The difference is the HNSW index "
        f"taking each new vector (pgvector inserts into the graph one vector at a time): for "
        f"a bulk load, drop the vector index, load, then rebuild it (`make vector-index`). "
        f"Memory a backend gains by loading the model: RSS "
        f"{r['backend_memory_added_mb']['rss']} MB, PSS {r['backend_memory_added_mb']['pss']} MB.",
        "",
        figure,
        "",
    ]
