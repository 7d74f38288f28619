"""Indexes: HNSW vs IVFFlat vs the exact scan on 10K and 100K real-distribution vectors.

The vectors are the corpus' real embeddings scaled up by benchlib.Synthesizer (its
distribution check is part of this section's report); the queries are the corpus' real
queries, embedded by pgseek. For each size, with no vector index the exact scan is timed
and gives the true top 10 of every query; then each index is built (timed, sized),
searched at every ef_search / probes setting (p50 / p95 latency, recall@10 against the
exact top 10), and dropped, pgseek's default HNSW index last, which stays for the search
and scale sections.

The query is the hand-written one on pgseek.documents (benchlib.RAW_KNN): no pgseek
function in the way. Settings are changed with SET between runs on a connection that
never prepares statements (benchdb.connect), and the plan of every setting is checked:
an "exact" or "ef_search = 200" figure cannot silently reuse an older plan.
"""

from __future__ import annotations

import math
import statistics

import psycopg
from benchdb import connect
from benchlib import (
    DEFAULT_INDEX,
    RAW_KNN,
    Context,
    build_index,
    drop_vector_indexes,
    explain,
    log,
    recall,
    relation_mb,
    summary,
    timed_ms,
    vector_database,
    vector_literal,
)

TITLE = "Indexes: HNSW vs IVFFlat vs exact scan"
SIZES = (10_000, 100_000)
QUICK_SIZES = (2_000, 5_000)
EF_SEARCH = (10, 20, 40, 80, 100, 200, 400)
PROBES = (1, 2, 5, 10, 20, 50, 100)
K = 10
TARGET_RECALL = 0.95
EXPLAIN_EF_SEARCH = 40  # pgvector's default
EXPLAIN_PROBES = 10  # pgseek's default (pgseek.config.ivfflat_probes)


def index_configs(rows: int, denser_hnsw: bool) -> list[dict]:
    """The indexes built at a size, pgseek's default last (it stays): IVFFlat with
    pgvector's advice of rows / 1000 lists and with sqrt(rows) lists, at the smallest
    size HNSW with m = 32, ef_construction = 128 (a denser graph: about 4x the default's
    build time, which at 100K rows would take minutes of the 30), and pgvector's and
    pgseek's default HNSW (m = 16, ef_construction = 64)."""
    lists = sorted({max(rows // 1000, 1), round(math.sqrt(rows))})
    configs = [
        {
            "label": f"IVFFlat lists {n}",
            "method": "ivfflat",
            "options": f"lists = {n}",
            "lists": n,
            "name": f"documents_embedding_bench_ivfflat_{n}",
        }
        for n in lists
    ]
    configs += [
        {
            "label": "HNSW m 32, ef_construction 128",
            "method": "hnsw",
            "options": "m = 32, ef_construction = 128",
            "name": "documents_embedding_bench_hnsw_32_128",
        }
    ][: 1 if denser_hnsw else 0]
    configs.append(
        {
            "label": "HNSW m 16, ef_construction 64 (default)",
            "method": "hnsw",
            "options": "m = 16, ef_construction = 64",
            "name": DEFAULT_INDEX,
        }
    )
    return configs


def settings_of(config: dict) -> list[tuple[str, int]]:
    """(setting, value) pairs a config is searched at."""
    if config["method"] == "hnsw":
        return [("hnsw.ef_search", v) for v in EF_SEARCH]
    return [("ivfflat.probes", v) for v in PROBES if v <= config["lists"]]


def plan_uses(conn: psycopg.Connection, query: str) -> str:
    """The node that produces the rows of the k-NN query's plan: 'Index Scan using X'
    or 'Seq Scan' (under a Sort), as EXPLAIN says now, with the session's settings."""
    lines = [r[0] for r in conn.execute("explain (costs off) " + RAW_KNN, (query, K))]
    for line in lines:
        text = line.strip().lstrip("-> ").strip()
        if text.startswith(("Index Scan", "Seq Scan", "Parallel Seq Scan")):
            return text.split(" on ")[0]
    return lines[0].strip()


def search_pass(
    conn: psycopg.Connection, queries: list[str], rounds: int
) -> tuple[list[float], list[list]]:
    """Latencies (ms) of `rounds` passes over the queries, and each query's result ids."""
    latencies, results = [], []
    for r in range(rounds):
        for i, q in enumerate(queries):
            ms, rows = timed_ms(conn, RAW_KNN, (q, K))
            latencies.append(ms)
            if r == 0:
                results.append([row[0] for row in rows])
            else:
                results[i] = [row[0] for row in rows]
    return latencies, results


def point(latencies: list[float], results: list[list], truth: list[list]) -> dict:
    return {
        **{k: round(v, 3) for k, v in summary(latencies).items()},
        "recall": round(
            statistics.mean(recall(f, t) for f, t in zip(results, truth, strict=True)), 4
        ),
        "rows": round(statistics.mean(len(r) for r in results), 2),
    }


def measure_size(ctx: Context, rows: int, queries: list[str], denser_hnsw: bool) -> dict:
    url = vector_database(ctx, rows)
    rounds = ctx.rounds
    out: dict = {"rows": rows, "queries": len(queries), "rounds": rounds, "indexes": []}
    with connect(url) as conn:
        drop_vector_indexes(conn)
        conn.execute("vacuum (analyze) pgseek.documents")
        out["table_mb"] = relation_mb(conn, "pgseek.documents", total=True)
        out["settings"] = dict(
            conn.execute(
                "select name, current_setting(name) from pg_settings where name in"
                " ('shared_buffers', 'maintenance_work_mem', 'work_mem',"
                " 'max_parallel_maintenance_workers', 'max_parallel_workers_per_gather')"
            ).fetchall()
        )
        log(f"{rows:,} rows: exact scan, {len(queries)} queries x {rounds}")
        search_pass(conn, queries[:5], 1)  # warm the cache
        latencies, truth = search_pass(conn, queries, rounds)
        out["exact"] = {**point(latencies, truth, truth), "plan": plan_uses(conn, queries[0])}
        out["exact_explain"] = explain(conn, RAW_KNN, (queries[0], K))
        for config in index_configs(rows, denser_hnsw):
            out["indexes"].append(measure_index(conn, config, queries, truth, rounds))
    return out


def measure_index(
    conn: psycopg.Connection, config: dict, queries: list[str], truth: list[list], rounds: int
) -> dict:
    log(f"  building {config['label']}")
    drop_vector_indexes(conn)
    build = build_index(conn, config["name"], config["method"], config["options"])
    result = {
        "label": config["label"],
        "method": config["method"],
        "options": config["options"],
        "build_seconds": round(build, 2),
        "size_mb": relation_mb(conn, f"pgseek.{config['name']}"),
        "points": [],
    }
    log(f"    built in {build:.1f} s, {result['size_mb']} MB; searching")
    search_pass(conn, queries, 1)  # warm the cache
    settings = settings_of(config)
    wanted = EXPLAIN_EF_SEARCH if config["method"] == "hnsw" else EXPLAIN_PROBES
    explain_at = max(v for _, v in settings if v <= wanted)  # probes <= lists
    for setting, value in settings:
        conn.execute(f"set {setting} = {value}")
        plan = plan_uses(conn, queries[0])
        latencies, results = search_pass(conn, queries, rounds)
        result["points"].append(
            {
                "setting": setting,
                "value": value,
                **point(latencies, results, truth),
                "plan": plan,
                "plan_ok": plan == f"Index Scan using {config['name']}",
            }
        )
        if value == explain_at:
            result["explain"] = {
                "setting": f"{setting} = {value}",
                "text": explain(conn, RAW_KNN, (queries[0], K)),
            }
        conn.execute(f"reset {setting}")
    return result


def run(ctx: Context) -> dict:
    corpus = ctx.corpus_set()
    queries = [vector_literal(v) for v in corpus.query_vectors]
    check = ctx.synthesizer().distribution_check(corpus.query_vectors)
    sizes = QUICK_SIZES if ctx.quick else SIZES
    results = {
        "real_vectors": len(corpus.vectors),
        "vector_source": corpus.source,
        "distribution": check,
        "sizes": [measure_size(ctx, rows, queries, rows == sizes[0]) for rows in sizes],
    }
    ctx.shared["indexes"] = results
    return results


# --- report ------------------------------------------------------------------------------


def cheapest(index: dict, target: float = TARGET_RECALL) -> dict | None:
    """The fastest (p50) setting of an index reaching the target recall, or None."""
    good = [p for p in index["points"] if p["recall"] >= target]
    return min(good, key=lambda p: p["p50"]) if good else None


def best(index: dict) -> dict:
    return max(index["points"], key=lambda p: (p["recall"], -p["p50"]))


def describe(point: dict) -> str:
    name = "ef_search" if point["setting"] == "hnsw.ef_search" else "probes"
    return f"{name} {point['value']}"


def compared(size: dict) -> tuple[dict, dict, dict, dict]:
    """(HNSW default, its cheapest point at the target recall, the IVFFlat index that
    reaches the target fastest, its point); the best recall where none reaches it."""
    hnsw = next(i for i in size["indexes"] if i["label"].endswith("(default)"))
    ivfs = [i for i in size["indexes"] if i["method"] == "ivfflat"]
    reached = [(i, cheapest(i)) for i in ivfs if cheapest(i)]
    ivf, ivf_point = (
        min(reached, key=lambda pair: pair[1]["p50"]) if reached else (ivfs[-1], best(ivfs[-1]))
    )
    return hnsw, cheapest(hnsw) or best(hnsw), ivf, ivf_point


def recommendation(size: dict) -> list[str]:
    """One size's comparison, in words, from its measurements."""
    exact = size["exact"]
    hnsw, hnsw_point, ivf, ivf_point = compared(size)
    speed = ivf_point["p50"] / hnsw_point["p50"]
    build = hnsw["build_seconds"] / max(ivf["build_seconds"], 1e-3)
    memory = hnsw["size_mb"] / max(ivf["size_mb"], 1e-3)
    return [
        f"At {size['rows']:,} vectors, for recall@10 >= {TARGET_RECALL}: HNSW (m 16, "
        f"ef_construction 64) needs {describe(hnsw_point)} and answers in "
        f"{hnsw_point['p50']:.2f} ms (p50; recall {hnsw_point['recall']:.3f}); "
        f"{ivf['label']} needs {describe(ivf_point)}: {ivf_point['p50']:.2f} ms (recall "
        f"{ivf_point['recall']:.3f}); the exact scan takes {exact['p50']:.1f} ms. HNSW is "
        f"{speed:.1f}x {'faster' if speed >= 1 else 'slower'} per query than IVFFlat at that "
        f"recall, but took {build:.1f}x as long to build ({hnsw['build_seconds']:.1f} s vs "
        f"{ivf['build_seconds']:.1f} s) and is {memory:.1f}x the size ({hnsw['size_mb']} MB "
        f"vs {ivf['size_mb']} MB)."
    ]


def advice(r: dict) -> list[str]:
    """The plain-language recommendation, every figure in it from the largest size."""
    small, large = r["sizes"][0], r["sizes"][-1]
    hnsw, hnsw_point, ivf, ivf_point = compared(large)
    _, small_point, _, _ = compared(small)
    rows = large["rows"] / small["rows"]
    faster = ivf_point["p50"] / hnsw_point["p50"]
    return [
        f"**Which index.** Use **HNSW** (pgseek's default) when query latency matters: at "
        f"{large['rows']:,} vectors it reached recall@10 >= {TARGET_RECALL} in "
        f"{hnsw_point['p50']:.2f} ms (p50), {faster:.1f}x "
        f"{'faster' if faster >= 1 else 'slower'} than IVFFlat at the same recall, and from "
        f"{small['rows']:,} to {large['rows']:,} vectors ({rows:.0f}x the rows) that "
        f"latency grew {hnsw_point['p50'] / small_point['p50']:.1f}x while the exact scan's "
        f"grew {large['exact']['p50'] / small['exact']['p50']:.1f}x. Its price is build "
        f"time ({hnsw['build_seconds']:.0f} s against IVFFlat's {ivf['build_seconds']:.0f} "
        f"s) and memory ({hnsw['size_mb']} MB against {ivf['size_mb']} MB; an index must "
        "stay in shared_buffers or the OS cache for these latencies). Use **IVFFlat** "
        "(`vector_index = 'ivfflat'`) when build time or memory is the constraint (bulk "
        "reloads, frequent rebuilds, little RAM) and a slower query at the same recall is "
        "acceptable; its lists are trained on the rows present at build time, so rebuild "
        "it after large changes. The **exact scan** (no index) took "
        f"{small['exact']['p50']:.1f} ms at {small['rows']:,} vectors and "
        f"{large['exact']['p50']:.1f} ms at {large['rows']:,}: enough for small "
        "collections, and what pgseek runs by itself for selective filters (see Filtered "
        "search).",
    ]


def color(index: dict, rows: int) -> str:
    """The same colour for the same kind of index in every panel."""
    if index["method"] == "hnsw":
        return "#c0392b" if index["label"].endswith("(default)") else "#e67e22"
    lists = int(index["options"].split("=")[1])
    return "#7fb3e6" if lists == max(rows // 1000, 1) else "#2f6db5"


def distribution_lines(d: dict) -> list[str]:
    def row(name: str, q: dict) -> str:
        return (
            f"| {name} | "
            + " | ".join(f"{q[k]:.3f}" for k in ("p5", "p25", "p50", "p75", "p95"))
            + " |"
        )

    return [
        "| cosine similarity | p5 | p25 | p50 | p75 | p95 |",
        "|---|---|---|---|---|---|",
        row("nearest neighbour, real set", d["nn_real"]),
        row("nearest neighbour, synthetic sample", d["nn_synthetic"]),
        row("random pairs, real", d["pairs_real"]),
        row("random pairs, synthetic", d["pairs_synthetic"]),
        row("query to its nearest, real set", d["query_real"]),
        row("query to its nearest, synthetic sample", d["query_synthetic"]),
    ]


def report(r: dict, ctx: Context) -> list[str]:
    sizes = r["sizes"]
    d = r["distribution"]

    def draw(fig) -> None:
        axes = fig.subplots(1, len(sizes), sharey=True)
        for ax, size in zip(axes, sizes, strict=True):
            for index in size["indexes"]:
                xs = [p["recall"] for p in index["points"]]
                ys = [p["p50"] for p in index["points"]]
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    markersize=3,
                    label=index["label"],
                    color=color(index, size["rows"]),
                )
                for p in index["points"][:: max(1, len(index["points"]) // 4)]:
                    ax.annotate(str(p["value"]), (p["recall"], p["p50"]), fontsize=5)
            ax.scatter(
                [1.0], [size["exact"]["p50"]], marker="*", s=80, color="black", label="exact scan"
            )
            ax.set_yscale("log")
            ax.set_xlabel("recall@10 vs exact")
            ax.set_title(f"{size['rows']:,} vectors x 384", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=5, loc="upper left")
        axes[0].set_ylabel("p50 latency (ms, log)")

    first = sizes[0]
    figure = ctx.figure(
        "indexes_recall_latency.png",
        draw,
        f"{' and '.join(format(s['rows'], ',') for s in sizes)} vectors x 384 (cosine), "
        f"{first['queries']} real queries x {first['rounds']} runs, k = 10; "
        f"ef_search {EF_SEARCH[0]}-{EF_SEARCH[-1]}, probes {PROBES[0]}-{PROBES[-1]}; "
        f"labels: the setting",
    )
    lines = [
        f"Data: the {r['real_vectors']:,} real embeddings of the corpus ({r['vector_source']}; "
        "all-MiniLM-L6-v2, 384-d) scaled to "
        + " and ".join(f"{s['rows']:,}" for s in sizes)
        + " vectors by `benchlib.Synthesizer`: each synthetic vector is a random real "
        "vector moved a random fraction (up to half) of the way towards one of its 10 "
        "nearest real neighbours, plus Gaussian noise shaped by the corpus covariance and "
        "scaled to that vector's nearest-neighbour distance (factor "
        f"{d['scale']}, calibrated so that a synthetic sample has the real set's median "
        "nearest-neighbour similarity), renormalised. The real vectors are the first rows; "
        "synthetic rows carry the text of the real document they came from. Queries: the "
        f"corpus' {first['queries']} real queries, embedded by pgseek; recall@10 is measured "
        "against the exact scan's top 10. Query: the hand-written `order by "
        "embedding::vector(384) <=> $1 limit 10` on `pgseek.documents` (client round trip, "
        f"{first['rounds']} runs over the queries per point, after a warm-up pass).",
        "",
        f"Does the synthetic set keep the real distribution? Equal-size samples "
        f"({d['sample']:,} vectors each; a denser set has nearer neighbours, so only equal "
        "sizes compare):",
        "",
        *distribution_lines(d),
        "",
        f"Nearest-neighbour similarity: Kolmogorov-Smirnov distance {d['nn_ks']} between "
        "real and synthetic (0 = the same distribution); random pairs (the global shape "
        f"of the space): KS {d.get('pairs_ks', '(not measured)')}. The real queries sit "
        "closer to the real set "
        f"(KS {d['query_ks']}) because the corpus was sampled around them (it holds their "
        "judged documents); the loaded sets keep all real vectors, so each query still "
        "finds its documents.",
        "",
    ]
    for size in sizes:
        s = size["settings"]
        lines += [
            f"### {size['rows']:,} vectors",
            "",
            f"Table `pgseek.documents`: {size['table_mb']} MB with its text and metadata "
            f"indexes. Builds: maintenance_work_mem {s['maintenance_work_mem']}, "
            f"max_parallel_maintenance_workers {s['max_parallel_maintenance_workers']}; "
            f"shared_buffers {s['shared_buffers']}.",
            "",
            "| index | build (s) | size (MB) | setting | p50 ms | p95 ms | recall@10 |",
            "|---|---|---|---|---|---|---|",
            f"| exact scan (no index) | | | | {size['exact']['p50']:.2f} | "
            f"{size['exact']['p95']:.2f} | 1.000 |",
        ]
        bad_plans = []
        for index in size["indexes"]:
            for n, p in enumerate(index["points"]):
                head = (
                    f"| {index['label']} | {index['build_seconds']:.1f} | {index['size_mb']}"
                    if n == 0
                    else "| | |"
                )
                lines.append(
                    f"{head} | {describe(p)} | {p['p50']:.2f} | {p['p95']:.2f} | "
                    f"{p['recall']:.3f} |"
                )
                if not p["plan_ok"]:
                    bad_plans.append(f"{index['label']} {describe(p)}: {p['plan']}")
        lines += [""]
        if bad_plans:
            lines += ["**Plans that did not use the index:** " + "; ".join(bad_plans), ""]
        else:
            lines += [
                f"Every setting's plan was checked: each index row used its index, the "
                f"exact row a `{size['exact']['plan']}`.",
                "",
            ]
        lines += [*recommendation(size), ""]
    lines += [figure, "", *advice(r), ""]
    largest = sizes[-1]
    lines += [
        f"<details><summary>EXPLAIN ANALYZE at {largest['rows']:,} vectors (first query)</summary>",
        "",
        "Exact scan (no vector index):",
        "",
        "```",
        largest["exact_explain"],
        "```",
        "",
    ]
    for index in largest["indexes"]:
        if "explain" in index:
            lines += [
                f"{index['label']}, `{index['explain']['setting']}`:",
                "",
                "```",
                index["explain"]["text"],
                "```",
                "",
            ]
    lines += ["</details>", ""]
    return lines
