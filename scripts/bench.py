"""pgseek's benchmarks: `make bench` (QUICK=1 for a smoke run). Writes bench/report.md
and PNG plots from the measurements; no figure is typed by hand.

It creates (and drops) a database of its own, pgseek_bench, on DATABASE_URL's server,
migrates it, and measures. Sections so far:
  ingest  the embedding path: raw model throughput inside PostgreSQL vs the full
          trigger + queue + worker path on the same texts, query-embedding latency,
          model load time and memory per backend.

Usage: bench.py [--quick] [--corpus DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg
from benchdb import connect, create_database, machine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "dbpedia-entity-5k"
BENCH_DB = "pgseek_bench"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p95": percentile(values, 95), "n": len(values)}


def load_passages(corpus: Path, limit: int) -> list[str]:
    path = corpus / "corpus.jsonl"
    if not path.exists():
        sys.exit(f"bench: {path} not found: pass --corpus DIR (a BEIR corpus.jsonl)")
    passages = []
    with path.open() as f:
        for line in f:
            doc = json.loads(line)
            passages.append(f"{doc.get('title', '')}. {doc['text']}".strip(". "))
            if len(passages) == limit:
                break
    return passages


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


def bench_ingest(url: str, passages: list[str], rounds: int) -> dict:
    results: dict = {"documents": len(passages)}
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
    return results


def plot_ingest(results: dict, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["raw model\n(compute_embeddings)", "trigger + queue\n+ worker"]
    p50 = [results["raw_docs_per_second"]["p50"], results["queue_docs_per_second"]["p50"]]
    p95 = [results["raw_docs_per_second"]["p95"], results["queue_docs_per_second"]["p95"]]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bars = ax.bar(labels, p50, color=["#7a9cc6", "#2f6db5"])
    ax.scatter(labels, p95, color="black", marker="_", s=400, label="p95 of runs", zorder=3)
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("documents / second (median of runs)")
    ax.set_title(
        f"Embedding throughput, {results['documents']} passages (~{results['avg_chars']} chars)",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    name = "ingest_throughput.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def write_report(out: Path, results: dict, args: argparse.Namespace, started: float) -> None:
    ingest = results["ingest"]
    figure = plot_ingest(ingest, out)
    r = ingest
    command = "make bench" + (" QUICK=1" if args.quick else "")
    lines = [
        "# pgseek benchmarks",
        "",
        f"Generated by `{command}` on {dt.date.today().isoformat()} in "
        f"{time.monotonic() - started:.0f} s. Machine: {machine()}. "
        f"PostgreSQL: {results['server_version']}. Every timing is the median (p50) over "
        f"repeated runs, with p95; every ratio compares figures of the same run.",
        "",
        "## Ingest: in-database embeddings",
        "",
        f"Data: {r['documents']} passages (title + abstract, ~{r['avg_chars']} characters) "
        f"from `{args.corpus}`. Model: the local all-MiniLM-L6-v2 (int8 ONNX), 2 threads. "
        f"Runs: {args.rounds}.",
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
        f"![Embedding throughput]({figure})",
        "",
        "Reproduce: `make db-up && make bench` (`QUICK=1` for a smoke run; "
        "`CORPUS=dir` for another BEIR corpus).",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {out / 'report.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("bench: DATABASE_URL is not set: run 'make db-up' first")
    started = time.monotonic()
    args.rounds = 2 if args.quick else 3
    passages = load_passages(args.corpus, 200 if args.quick else 1000)
    log(f"creating and migrating database {BENCH_DB}")
    bench_url = create_database(url, BENCH_DB)
    with connect(bench_url) as conn:
        version = conn.execute("show server_version").fetchone()[0]
    results = {"server_version": version, "ingest": bench_ingest(bench_url, passages, args.rounds)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, results, args, started)


if __name__ == "__main__":
    main()
