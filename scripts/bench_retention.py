"""Retention: purge throughput, and hybrid_search latency before and during a purge.

A live collection (real passages with real embeddings, HNSW in place) sits beside a
large expired one (source "training", 60 days old, under a 30-day policy). One client
runs hybrid_search (given query vectors) in a loop, first alone, then while
pgseek.purge_expired() deletes the expired rows in its batches; then the maintenance a
large purge calls for is timed: a plain VACUUM (what autovacuum would do), and
REINDEX TABLE CONCURRENTLY followed by VACUUM (what pgseek schedules).

The expired rows carry no vectors: a million-vector HNSW build would not fit the
benchmark's 30 minutes on 2 cores, and deleting rows does not touch the HNSW graph until
VACUUM (see the Indexes and Scale sections for vector-heavy figures).
"""

from __future__ import annotations

import threading
import time

from benchdb import connect, create_database
from benchlib import Context, copy_vectors, log, summary, vector_literal

TITLE = "Retention: purging while searching"
DB = "pgseek_bench_retention"
HYBRID = (
    'select id from pgseek.hybrid_search(%s, %s::vector, k => 10, filter => \'{"source": "docs"}\')'
)


def load(ctx: Context, url: str, live: int, expired: int) -> list[str]:
    passages = ctx.passages(2000)
    real = ctx.real_vectors()
    live = min(live, len(real))
    with connect(url) as conn:
        conn.execute("update pgseek.config set embedding_mode = 'off'")
        log(f"loading {live} live documents with real vectors")
        copy_vectors(conn, real[:live], metadata=lambda _: '{"source": "docs"}')
        conn.execute(
            "update pgseek.documents set content = (%s::text[])[1 + (hashtext(id::text) & 2047)"
            " %% %s]",
            (passages, len(passages)),
        )
        log(f"loading {expired} expired documents (60 days old, source training)")
        step = 100_000
        for start in range(0, expired, step):
            conn.execute(
                "insert into pgseek.documents (content, metadata, created_at)"
                ' select (%s::text[])[1 + i %% %s], \'{"source": "training"}\','
                " now() - interval '60 days' - i * interval '1 second'"
                " from generate_series(%s::int, %s::int) as i",
                (passages, len(passages), start, min(start + step, expired) - 1),
            )
            log(f"  {min(start + step, expired)} / {expired}")
        conn.execute("vacuum (analyze) pgseek.documents")
        conn.execute("select pgseek.refresh_text_stats()")
        conn.execute("select pgseek.set_retention('{\"source\": \"training\"}', '30 days')")
    words = [p.split() for p in passages]
    return [" ".join(w[1:4]) for w in words if len(w) >= 4]


def search_loop(url: str, texts: list[str], vectors: list[str], stop: threading.Event) -> list:
    """hybrid_search calls back to back until stop is set; their latencies (ms)."""
    latencies = []
    with connect(url) as conn:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            conn.execute(HYBRID, (texts[i % len(texts)], vectors[i % len(vectors)])).fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
            i += 1
    return latencies


def timed(conn, sql: str) -> float:
    started = time.perf_counter()
    conn.execute(sql)
    return time.perf_counter() - started


def run(ctx: Context) -> dict:
    live, expired = (1000, 20_000) if ctx.quick else (5000, 500_000)
    url = create_database(ctx.server_url, DB)
    texts = load(ctx, url, live, expired)
    vectors = [vector_literal(v) for v in ctx.corpus_set().query_vectors]
    with connect(url) as conn:
        live = conn.execute("select count(*) from pgseek.documents").fetchone()[0] - expired
        table_mb = conn.execute(
            "select pg_total_relation_size('pgseek.documents') / 1e6"
        ).fetchone()[0]
    baseline_seconds = 5 if ctx.quick else 30
    log(f"hybrid_search alone for {baseline_seconds} s")
    stop = threading.Event()
    out: dict = {}

    def worker() -> None:
        out["latencies"] = search_loop(url, texts, vectors, stop)

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(baseline_seconds)
    stop.set()
    thread.join()
    before = out["latencies"]

    log(f"purging {expired} rows while hybrid_search runs")
    stop.clear()
    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(1)
    with connect(url) as conn:
        started = time.perf_counter()
        deleted = conn.execute(
            "call pgseek.purge_expired(time_budget => interval '1 hour')"
        ).fetchone()[0]
        purge_seconds = time.perf_counter() - started
        log_row = conn.execute(
            "select status, batches, maintenance from pgseek.purge_log order by id desc limit 1"
        ).fetchone()
    stop.set()
    thread.join()
    during = out["latencies"]

    with connect(url) as conn:
        log("maintenance: plain VACUUM, then REINDEX TABLE CONCURRENTLY + VACUUM")
        vacuum_plain = timed(conn, "vacuum pgseek.documents")
        reindex = timed(conn, "reindex table concurrently pgseek.documents")
        vacuum_after = timed(conn, "vacuum (analyze) pgseek.documents")
        remaining = conn.execute("select count(*) from pgseek.documents").fetchone()[0]
    stop.clear()
    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(baseline_seconds / 2)
    stop.set()
    thread.join()
    after = out["latencies"]
    return {
        "live": live,
        "expired": expired,
        "table_mb": round(float(table_mb), 1),
        "deleted": deleted,
        "remaining": remaining,
        "purge_seconds": purge_seconds,
        "purge_rows_per_second": deleted / purge_seconds,
        "purge_status": log_row[0],
        "batches": log_row[1],
        "maintenance": log_row[2],
        "before_ms": summary(before),
        "during_ms": summary(during),
        "after_ms": summary(after),
        "p95_ratio": summary(during)["p95"] / summary(before)["p95"],
        "vacuum_plain_seconds": vacuum_plain,
        "reindex_seconds": reindex,
        "vacuum_after_reindex_seconds": vacuum_after,
    }


def report(r: dict, ctx: Context) -> list[str]:
    def draw(fig) -> None:
        ax = fig.add_subplot()
        labels = ["before purge", "during purge", "after reindex\n+ vacuum"]
        keys = ["before_ms", "during_ms", "after_ms"]
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], [r[k]["p50"] for k in keys], 0.4, label="p50")
        ax.bar([i + 0.2 for i in x], [r[k]["p95"] for k in keys], 0.4, label="p95")
        ax.set_xticks(list(x), labels)
        ax.set_ylabel("hybrid_search latency (ms)")
        ax.set_title(
            f"hybrid_search on {r['live']} live documents while {r['deleted']:,} rows are purged",
            fontsize=10,
        )
        ax.legend(fontsize=8)

    figure = ctx.figure(
        "retention_latency.png",
        draw,
        f"{r['live']} live + {r['expired']:,} expired rows, 1 search client, batches of 1000",
    )
    verdict = "within" if r["p95_ratio"] <= 2 else "above"
    return [
        f"Data: {r['live']} live documents (real passages and embeddings, HNSW index) and "
        f"{r['expired']:,} expired documents without vectors under a 30-day policy; table "
        f"{r['table_mb']} MB before the purge. One client searches the live collection, "
        '`hybrid_search(text, vector, k => 10, filter => \'{"source": "docs"}\')`, back '
        "to back; `call pgseek.purge_expired()` runs beside it (batches of "
        "1000, each its own transaction).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| rows purged | {r['deleted']:,} in {r['batches']} batches "
        f"({r['purge_status']}; {r['remaining']} rows left) |",
        f"| purge time (s) | {r['purge_seconds']:.1f} |",
        f"| **purge throughput (rows/s)** | **{r['purge_rows_per_second']:,.0f}** |",
        f"| hybrid_search p50 / p95 before (ms, {r['before_ms']['n']} calls) | "
        f"{r['before_ms']['p50']:.1f} / {r['before_ms']['p95']:.1f} |",
        f"| hybrid_search p50 / p95 during (ms, {r['during_ms']['n']} calls) | "
        f"{r['during_ms']['p50']:.1f} / {r['during_ms']['p95']:.1f} |",
        f"| hybrid_search p50 / p95 after maintenance (ms) | "
        f"{r['after_ms']['p50']:.1f} / {r['after_ms']['p95']:.1f} |",
        f"| **p95 during / before** | **{r['p95_ratio']:.2f}** (target <= 2: {verdict}) |",
        f"| plain `VACUUM` right after the purge (s) | {r['vacuum_plain_seconds']:.1f} |",
        f"| `REINDEX TABLE CONCURRENTLY` (s) | {r['reindex_seconds']:.1f} |",
        f"| `VACUUM (ANALYZE)` after it (s) | {r['vacuum_after_reindex_seconds']:.2f} |",
        f"| purge_log.maintenance | {r['maintenance']} |",
        "",
        "The purge deleted a large share of the table, so its run scheduled (or, where "
        "pg_cron is not installed in the database, as here, advised) the rebuild and vacuum "
        "of [After large purges](../README.md#after-large-purges).",
        "",
        figure,
        "",
    ]
