"""Tenants: what row-level security costs a search.

20,000 documents of the synthetic set (real passages and vectors first; 4,000 in a quick
run) spread evenly over 10 tenants, with pgseek's default HNSW index. A login role in
pgseek_reader names tenant t3 for its session (`pgseek.tenant`) and runs the corpus' real
queries through search_similar, hybrid_search with a given vector (without and with a
metadata filter matching a tenth of the rows) and hybrid_search's keyword branch alone,
first with tenants disabled (it sees every document), then enabled with
pgseek.set_tenants(true) (it sees t3's tenth of them).
"""

from __future__ import annotations

import secrets

from bench_search import run_method, scored
from benchdb import connect, create_database
from benchlib import Context, ensure_default_index, load_rows, log, vector_literal
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

TITLE = "Tenants: the cost of row-level security"
DB = "pgseek_bench_tenants"
ROWS, QUICK_ROWS = 20_000, 4_000
TENANTS = 10
TENANT = "t3"
READER = "pgseek_bench_tenant_reader"
QUERIES = {
    "search_similar": (
        "`search_similar(v, 10)`",
        "select id from pgseek.search_similar(%(v)s::vector, 10)",
    ),
    "hybrid": (
        "`hybrid_search(q, v, k => 10)`",
        "select id from pgseek.hybrid_search(%(q)s, %(v)s::vector, k => 10)",
    ),
    "hybrid_filter": (
        "`hybrid_search(q, v, k => 10, filter => '{\"group_10\": 3}')`",
        "select id from pgseek.hybrid_search(%(q)s, %(v)s::vector, k => 10,"
        " filter => '{\"group_10\": 3}')",
    ),
    "text": (
        "`hybrid_search(q, k => 10, mode => 'text')`",
        "select id from pgseek.hybrid_search(%(q)s, k => 10, mode => 'text')",
    ),
}


def load(ctx: Context, url: str, rows: int) -> None:
    with connect(url) as conn:
        conn.execute("update pgseek.config set embedding_mode = 'off'")
    load_rows(ctx, url, rows)
    with connect(url) as conn:
        conn.execute(
            "update pgseek.documents set tenant = 't' || (abs(hashtext(id::text)) %% %s)",
            (TENANTS,),
        )
        ensure_default_index(conn)
        conn.execute("vacuum (analyze) pgseek.documents, pgseek.text_postings")
        conn.execute("select pgseek.refresh_text_stats()")


def reader_url(url: str, password: str) -> str:
    params = conninfo_to_dict(url)
    params.update(user=READER, password=password, options=f"-c pgseek.tenant={TENANT}")
    return make_conninfo(**params)


def measure(ctx: Context, url: str, params: list[dict]) -> dict:
    with connect(url) as conn:
        return {
            name: scored(run_method(conn, q, params, ctx.rounds))
            for name, (_, q) in QUERIES.items()
        }


def run(ctx: Context) -> dict:
    rows = QUICK_ROWS if ctx.quick else ROWS
    url = create_database(ctx.server_url, DB)
    log(f"loading {rows:,} documents in {TENANTS} tenants")
    load(ctx, url, rows)
    corpus = ctx.corpus_set()
    params = [
        {"q": q, "v": vector_literal(v)}
        for q, v in zip(corpus.queries, corpus.query_vectors, strict=True)
    ]
    password = secrets.token_hex(16)
    with connect(url) as conn:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(READER)))
        conn.execute(
            sql.SQL("create role {} login password {} in role pgseek_reader").format(
                sql.Identifier(READER), sql.Literal(password)
            )
        )
        visible = dict(
            conn.execute(
                "select tenant = %s, count(*) from pgseek.documents group by 1", (TENANT,)
            ).fetchall()
        )
    try:
        reader = reader_url(url, password)
        log("tenants disabled: the reader sees every document")
        off = measure(ctx, reader, params)
        with connect(url) as conn:
            conn.execute("select pgseek.set_tenants(true)")
        with connect(reader) as conn:
            seen = conn.execute("select count(*) from pgseek.documents").fetchone()[0]
        log(f"tenants enabled: the reader sees {seen:,} documents")
        on = measure(ctx, reader, params)
    finally:
        with connect(url) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(READER)))
    return {
        "rows": rows,
        "tenant_rows": visible.get(True, 0),
        "seen_with_tenants": seen,
        "queries": len(params),
        "rounds": ctx.rounds,
        "off": off,
        "on": on,
    }


def report(r: dict, ctx: Context) -> list[str]:
    names = list(QUERIES)

    def draw(fig) -> None:
        ax = fig.add_subplot()
        y = range(len(names))
        for offset, key, color, label in (
            (-0.2, "off", "#999999", "tenants off"),
            (0.2, "on", "#2f6db5", "tenants on"),
        ):
            ax.barh(
                [i + offset for i in y],
                [r[key][n]["ms"]["p50"] for n in names],
                height=0.4,
                color=color,
                label=label,
            )
        ax.set_yticks(list(y), [QUERIES[n][0].strip("`") for n in names], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("p50 ms")
        ax.legend(fontsize=7)
        ax.set_title(
            f"Row-level security, {r['rows']:,} documents in {TENANTS} tenants", fontsize=10
        )

    figure = ctx.figure(
        "tenants_latency.png",
        draw,
        f"{r['rows']:,} documents x 384, {TENANTS} tenants, HNSW m 16 ef_construction 64, "
        f"{r['queries']} real queries x {r['rounds']} runs, k = 10",
    )
    lines = [
        f"Data: {r['rows']:,} documents of the synthetic set (the Indexes section's) in "
        f"{TENANTS} tenants, pgseek's default HNSW index. A `pgseek_reader` login naming "
        f"tenant `{TENANT}` ({r['tenant_rows']:,} documents; with tenants enabled it saw "
        f"{r['seen_with_tenants']:,}) runs the corpus' {r['queries']} real queries, "
        f"{r['rounds']} passes, k = 10; the filter matches a tenth of the rows "
        "independently of the tenants.",
        "",
        "| query | tenants off: p50 / p95 ms | tenants on: p50 / p95 ms | on / off (p50) |",
        "|---|---|---|---|",
    ]
    for name, (label, _) in QUERIES.items():
        off, on = r["off"][name]["ms"], r["on"][name]["ms"]
        lines.append(
            f"| {label} | {off['p50']:.2f} / {off['p95']:.2f} | {on['p50']:.2f} / "
            f"{on['p95']:.2f} | {on['p50'] / off['p50']:.2f}x |"
        )
    lines += [
        "",
        "With tenants enabled, PostgreSQL cannot use a GIN index for the reader (`@@` and "
        "`@>` are not leakproof), so a metadata filter starts from the tenant's rows "
        "(index `documents_tenant_idx`); the HNSW scan walks past other tenants' neighbours "
        "until it has enough of the tenant's own; the keyword branch without a filter reads "
        "`text_postings` by its primary key either way (text equality is leakproof), "
        "checking each entry's tenant.",
        "",
        figure,
        "",
    ]
    return lines
