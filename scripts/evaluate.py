"""pgseek's retrieval evaluation: `make eval` (CORPUS=dir for another BEIR dataset).
Writes bench/eval.md and bench/eval.json; no figure is typed by hand.

It loads a BEIR dataset (default: dbpedia-entity-5k) into a database of its own,
pgseek_eval, on DATABASE_URL's server, through pgseek itself: COPY into pgseek.documents,
the insert trigger queues every row, pgseek.process_embedding_queue() embeds them with the
in-database model. A later run reuses that database when it holds exactly the corpus, all
embedded (--reload loads it afresh). Then, for every judged query, it takes the top 100
of each method and scores nDCG@10 (graded) and recall@100 (grade >= 1):
  pgseek    pgseek.hybrid_search() in each mode, and its default call
  recipe    the plain SQL a user would hand-write on the same table and query embedding:
            vector only, ts_rank text only, RRF of both (k = 60), 0.7 / 0.3 weighted sum

Usage: evaluate.py [--corpus DIR] [--out DIR] [--reload]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
from retrieval_metrics import ndcg_at_k, paired_difference, recall_at_k

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "dbpedia-entity-5k"
EVAL_DB = "pgseek_eval"
EMBED_BATCH = 256
LATENCY_ROUNDS = 3  # timed passes over the queries per method; the rankings are the same

PGSEEK_SQL = """
select h.metadata ->> 'beir_id'
from pgseek.hybrid_search(query_text => %(query)s, k => 100{mode}) with ordinality as h
order by h.ordinality
"""

# The plain recipes: what a user writes by hand on pgseek.documents (README, "Dimensions
# and the vector index"). pgseek.embed() is volatile, so it sits in a scalar subquery:
# evaluated once per query, and a constant the HNSW index scan can use. An HNSW scan
# returns at most hnsw.ef_search rows (default 40), so the recipes that use it raise it to
# their limit, as pgvector's README says to (RECIPE_OPTIONS).
RECIPE_OPTIONS = "-c hnsw.ef_search=100"

VECTOR_RECIPE = """
select metadata ->> 'beir_id'
from pgseek.documents
where vector_dims(embedding) = 384
order by embedding::vector(384) <=> (select pgseek.embed(%(query)s))::vector(384)
limit 100
"""

TEXT_RECIPE = """
select metadata ->> 'beir_id'
from pgseek.documents
where fts @@ websearch_to_tsquery('english', %(query)s)
order by ts_rank(fts, websearch_to_tsquery('english', %(query)s)) desc
limit 100
"""

# Both candidate lists, top 100 each, for the fusion recipes below.
CANDIDATES = """
with vector_hits as (
    select id, 1 - distance as similarity, row_number() over (order by distance) as rank
    from (
        select
            id,
            embedding::vector(384) <=> (select pgseek.embed(%(query)s))::vector(384) as distance
        from pgseek.documents
        where vector_dims(embedding) = 384
        order by distance
        limit 100
    ) as nearest
),
text_hits as (
    select id, score, row_number() over (order by score desc) as rank
    from (
        select id, ts_rank(fts, query) as score
        from pgseek.documents, websearch_to_tsquery('english', %(query)s) as query
        where fts @@ query
        order by score desc
        limit 100
    ) as matches
)
select d.metadata ->> 'beir_id'
from vector_hits as v
full join text_hits as t using (id)
join pgseek.documents as d using (id)
"""

RRF_RECIPE = (
    CANDIDATES
    + """order by coalesce(1.0 / (60 + v.rank), 0) + coalesce(1.0 / (60 + t.rank), 0) desc, id
limit 100
"""
)

WEIGHTED_RECIPE = (
    CANDIDATES
    + """order by 0.7 * coalesce(v.similarity, 0) + 0.3 * coalesce(t.score, 0) desc, id
limit 100
"""
)


@dataclass(frozen=True)
class Method:
    name: str
    sql: str
    description: str
    options: str = ""  # libpq options (session settings) of the method's connection


def pgseek_method(mode: str | None) -> Method:
    if mode is None:
        return Method(
            "pgseek default",
            PGSEEK_SQL.format(mode=""),
            "`hybrid_search(query_text => q, k => 100)`, every other argument at its default",
        )
    return Method(
        f"pgseek {mode}",
        PGSEEK_SQL.format(mode=f", mode => '{mode}'"),
        f"`hybrid_search(query_text => q, k => 100, mode => '{mode}')`",
    )


METHODS = [
    pgseek_method(None),
    *(pgseek_method(mode) for mode in ("vector", "text", "convex", "rrf", "weighted", "dbsf")),
    Method(
        "recipe vector",
        VECTOR_RECIPE,
        "`order by embedding::vector(384) <=> pgseek.embed(q)::vector(384) limit 100`, "
        "`hnsw.ef_search = 100` (at its default, 40, the HNSW scan returns only 40 rows)",
        RECIPE_OPTIONS,
    ),
    Method(
        "recipe ts_rank",
        TEXT_RECIPE,
        "`where fts @@ websearch_to_tsquery('english', q) order by ts_rank(...) desc`",
    ),
    Method(
        "recipe rrf",
        RRF_RECIPE,
        "the two recipes above (top 100 each), full outer join, "
        "`1/(60 + vector rank) + 1/(60 + text rank)`",
        RECIPE_OPTIONS,
    ),
    Method(
        "recipe weighted",
        WEIGHTED_RECIPE,
        "the same candidates, `0.7 * (1 - cosine distance) + 0.3 * ts_rank` (missing side 0)",
        RECIPE_OPTIONS,
    ),
]


@dataclass
class Dataset:
    documents: dict[str, str]  # BEIR id -> the content stored in pgseek.documents
    titles: dict[str, str]
    queries: dict[str, str]  # the judged queries only
    qrels: dict[str, dict[str, int]]  # query id -> {document id: grade}


# Every method is compared with this one, query by query.
BASELINE = "pgseek vector"


def log(message: str) -> None:
    print(f"eval: {message}", file=sys.stderr, flush=True)


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open() as f:
        next(f)  # the header line
        for line in f:
            query_id, doc_id, grade = line.rstrip("\n").split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(grade)
    return qrels


def document_content(doc: dict) -> str:
    """Title and text as one passage, "Title. Text", as bench.py stores them: the model
    reads the entity's name as a first sentence (BEIR's dense baselines also embed title
    and text as one string); full text search ignores the separator."""
    return ". ".join(part for part in (doc.get("title", "").strip(), doc["text"].strip()) if part)


def load_dataset(corpus: Path) -> Dataset:
    files = [corpus / "corpus.jsonl", corpus / "queries.jsonl", corpus / "qrels" / "test.tsv"]
    missing = [str(f.relative_to(corpus)) for f in files if not f.is_file()]
    if missing:
        sys.exit(
            f"eval: no BEIR dataset at {corpus} (missing {', '.join(missing)}): "
            "pass --corpus DIR (make eval CORPUS=DIR)"
        )
    docs = read_jsonl(files[0])
    qrels = read_qrels(files[2])
    queries = {q["_id"]: q["text"] for q in read_jsonl(files[1]) if q["_id"] in qrels}
    return Dataset(
        documents={d["_id"]: document_content(d) for d in docs},
        titles={d["_id"]: d.get("title", "") for d in docs},
        queries=queries,
        qrels={q: qrels[q] for q in queries},
    )


def is_loaded(url: str, documents: dict[str, str]) -> bool:
    """Does the database hold exactly these documents, every one embedded?"""
    with connect(url) as conn:
        rows = conn.execute(
            "select metadata ->> 'beir_id', content, embedding is not null from pgseek.documents"
        ).fetchall()
    stored = {beir_id: content for beir_id, content, _ in rows}
    return len(rows) == len(documents) and stored == documents and all(r[2] for r in rows)


def copy_documents(conn: psycopg.Connection, dataset: Dataset) -> None:
    copy_sql = "copy pgseek.documents (content, metadata) from stdin"
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for beir_id, content in dataset.documents.items():
            metadata = {"beir_id": beir_id, "title": dataset.titles[beir_id]}
            copy.write_row((content, json.dumps(metadata)))


def embed_queued(conn: psycopg.Connection, total: int) -> None:
    """Run the embedding worker until the queue is empty, with a progress line a batch."""
    started, done = time.monotonic(), 0
    while batch := conn.execute(
        "select pgseek.process_embedding_queue(%s)", (EMBED_BATCH,)
    ).fetchone()[0]:
        done += batch
        rate = done / (time.monotonic() - started)
        log(f"embedded {done}/{total} ({rate:.0f} docs/s, ~{(total - done) / rate:.0f} s left)")
    status = conn.execute(
        "select queued, dead_letter, unaccounted from pgseek.embedding_status"
    ).fetchone()
    if status != (0, 0, 0):
        sys.exit(
            f"eval: embedding left queued/dead_letter/unaccounted = {status}: "
            "see select * from pgseek.embedding_failures"
        )


def load_corpus(url: str, dataset: Dataset) -> None:
    total = len(dataset.documents)
    with connect(url) as conn:
        started = time.monotonic()
        copy_documents(conn, dataset)
        log(f"copied {total} documents in {time.monotonic() - started:.1f} s; embedding them")
        embed_queued(conn, total)


def reusable(server_url: str, url: str, dataset: Dataset) -> bool:
    """Migrate an existing pgseek_eval (changed search functions) and check its documents."""
    if not database_exists(server_url, EVAL_DB):
        return False
    try:
        migrate(url)
    except MigrationFailed as error:
        last_lines = " ".join(str(error).splitlines()[-3:])
        log(f"migrating the existing {EVAL_DB} failed ({last_lines}): loading it afresh")
        return False
    if is_loaded(url, dataset.documents):
        return True
    log(f"{EVAL_DB} does not hold exactly the corpus, all embedded: loading it afresh")
    return False


def prepare_database(server_url: str, dataset: Dataset, reload: bool) -> dict:
    """pgseek_eval at head holding the corpus, all embedded: reused when it already does."""
    started = time.monotonic()
    url = database_url(server_url, EVAL_DB)
    if not reload and reusable(server_url, url, dataset):
        log(f"reusing {EVAL_DB}: it holds the corpus, all embedded (--reload to reload)")
        return {"url": url, "reused": True, "seconds": time.monotonic() - started}
    log(f"creating and migrating database {EVAL_DB}")
    create_database(server_url, EVAL_DB)
    load_corpus(url, dataset)
    return {"url": url, "reused": False, "seconds": time.monotonic() - started}


def run_method(url: str, method: Method, dataset: Dataset) -> dict:
    """Rankings and latencies (ms, round trip with the rows) of one method on every query,
    on a connection of its own. An untimed first query loads the model in the backend."""
    rankings, latencies = {}, []
    with connect(url, options=method.options) as conn:
        conn.execute(method.sql, {"query": next(iter(dataset.queries.values()))}).fetchall()
        for _ in range(LATENCY_ROUNDS):
            for query_id, text in dataset.queries.items():
                started = time.perf_counter()
                rows = conn.execute(method.sql, {"query": text}).fetchall()
                latencies.append((time.perf_counter() - started) * 1000)
                rankings[query_id] = [beir_id for (beir_id,) in rows]
    return {"rankings": rankings, "latencies_ms": latencies}


def score(run: dict, dataset: Dataset) -> dict:
    per_query = {
        query_id: {
            "ndcg@10": ndcg_at_k(ranked, dataset.qrels[query_id], 10),
            "recall@100": recall_at_k(ranked, dataset.qrels[query_id], 100),
            "results": len(ranked),
            "duplicates": len(ranked) - len(set(ranked)),
        }
        for query_id, ranked in run["rankings"].items()
    }
    latencies = run["latencies_ms"]
    return {
        "ndcg@10": statistics.mean(q["ndcg@10"] for q in per_query.values()),
        "recall@100": statistics.mean(q["recall@100"] for q in per_query.values()),
        "latency_ms_mean": statistics.mean(latencies),
        "latency_ms_p95": sorted(latencies)[round(0.95 * (len(latencies) - 1))],
        "results_mean": statistics.mean(q["results"] for q in per_query.values()),
        "duplicates": sum(q["duplicates"] for q in per_query.values()),
        "per_query": per_query,
    }


def evaluate(url: str, dataset: Dataset) -> dict:
    """Every method's scores. First the keyword statistics are refreshed (cheap, and right
    even when the corpus was loaded before they existed) and every query embedding is
    computed, so that all methods find them in pgseek.embed's cache."""
    with connect(url) as conn:
        conn.execute("select pgseek.refresh_text_stats()")
        conn.execute("select pgseek.embed(%s::text[])", (list(dataset.queries.values()),))
    results = {}
    for method in METHODS:
        log(f"running {method.name} on {len(dataset.queries)} queries")
        results[method.name] = score(run_method(url, method, dataset), dataset)
    baseline = [q["ndcg@10"] for q in results[BASELINE]["per_query"].values()]
    for name, r in results.items():
        if name != BASELINE:
            ndcg = [
                r["per_query"][query_id]["ndcg@10"] for query_id in results[BASELINE]["per_query"]
            ]
            r["vs_baseline"] = paired_difference(ndcg, baseline)
    return results


def versus(r: dict) -> str:
    """The paired comparison with the baseline as a table cell."""
    if "vs_baseline" not in r:
        return "(baseline)"
    d = r["vs_baseline"]
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], {d['better']} / {d['worse']}"


def table(results: dict) -> list[str]:
    lines = [
        "| method | nDCG@10 | recall@100 | mean ms | p95 ms | results/query "
        f"| nDCG@10 - {BASELINE} [95% CI], queries better / worse |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['ndcg@10']:.3f} | {r['recall@100']:.3f} | "
            f"{r['latency_ms_mean']:.1f} | {r['latency_ms_p95']:.1f} | {r['results_mean']:.1f} "
            f"| {versus(r)} |"
        )
    return lines


def duplicate_notes(results: dict) -> list[str]:
    """A paragraph per method that returned a document twice for a query."""
    notes = []
    for name, r in results.items():
        if r["duplicates"]:
            notes += [f"**{name} returned {r['duplicates']} duplicate rows** (counted as is).", ""]
    return notes


def write_report(out: Path, report: dict, command: str) -> None:
    load = report["load"]
    loaded = (
        "reused from an earlier run"
        if load["reused"]
        else f"loaded and embedded in {load['seconds']:.0f} s"
    )
    lines = [
        "# pgseek retrieval quality",
        "",
        f"Generated by `{command}` on {report['date']} in {report['seconds']:.0f} s. "
        f"Machine: {report['machine']}. PostgreSQL: {report['server_version']}.",
        "",
        f"Corpus: `{report['corpus']}`, {report['documents']} documents stored as "
        f"`title. text` in `pgseek.documents` ({loaded}), embedded in the database by "
        f"{report['model']}. Queries: the {report['queries']} judged ones. nDCG@10 uses "
        "graded gains (0, 1, 2) and the ideal ranking of all judged documents; recall@100 "
        "counts grade >= 1 as relevant. Latency: client round trip of the whole query, "
        "100 rows fetched, query embeddings already cached (`pgseek.embed`), "
        f"{LATENCY_ROUNDS} passes over the queries.",
        "",
        *table(report["methods"]),
        "",
        f"The last column compares each method with {BASELINE}, query by query: the mean "
        "difference of nDCG@10, its 95% interval by the paired bootstrap (the queries "
        "resampled 10,000 times, seeded), and on how many queries the method scores higher "
        "and lower. An interval that contains 0 means these queries cannot tell the two "
        "apart.",
        "",
        *duplicate_notes(report["methods"]),
        "Methods (q = the query text):",
        "",
        *(f"- **{m.name}**: {m.description}" for m in METHODS),
        "",
        "Reproduce: `make db-up && make eval` (`CORPUS=dir` for another BEIR dataset). "
        "A run reuses the loaded corpus; `DATABASE_URL=$(make -s db-url) "
        ".venv/bin/python scripts/evaluate.py --reload` loads it afresh.",
        "",
    ]
    (out / "eval.md").write_text("\n".join(lines))
    (out / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {out / 'eval.md'} and {out / 'eval.json'}")


def describe_server(url: str) -> dict:
    with connect(url) as conn:
        version = conn.execute("show server_version").fetchone()[0]
        model = conn.execute(
            "select embedding_provider || ' ' || embedding_model "
            "|| ' (' || embedding_dimensions || '-d)' from pgseek.config"
        ).fetchone()[0]
    return {"server_version": version, "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--reload", action="store_true", help="load the corpus afresh")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        sys.exit("eval: DATABASE_URL is not set: run 'make db-up' first")
    started = time.monotonic()
    dataset = load_dataset(args.corpus.resolve())
    load = prepare_database(server_url, dataset, args.reload)
    url = load.pop("url")
    methods = evaluate(url, dataset)
    print("\n".join(table(methods)))
    report = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        **describe_server(url),
        "corpus": str(args.corpus.resolve()),
        "documents": len(dataset.documents),
        "queries": len(dataset.queries),
        "load": load,
        "seconds": time.monotonic() - started,
        "methods": methods,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    custom_corpus = args.corpus.resolve() != DEFAULT_CORPUS.resolve()
    command = "make eval" + (f" CORPUS={args.corpus}" if custom_corpus else "")
    write_report(args.out, report, command)


if __name__ == "__main__":
    main()
