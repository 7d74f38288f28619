"""Retrieval quality: nDCG@10 and recall@100 of every hybrid_search mode next to the
plain recipes, on the BEIR corpus, by scripts/evaluate.py's own functions (the same
methods, metrics and database as `make eval`).

A full run evaluates the whole corpus in evaluate.py's pgseek_eval, reused when it holds
the corpus embedded (make eval, or the first section that needed the corpus' vectors,
loaded it). A quick run checks the path end to end on a small slice (SLICE_QUERIES
judged queries, their judged documents and some others, in pgseek_bench_quality): its
figures say nothing about quality.
"""

from __future__ import annotations

from benchdb import create_database, database_exists
from benchlib import Context, ensure_eval_database, log

TITLE = "Retrieval quality"
QUICK_DB = "pgseek_bench_quality"
SLICE_QUERIES = 2
SLICE_DOCUMENTS = 200


def quick_dataset(dataset):
    """The first SLICE_QUERIES judged queries, their judged documents, and the corpus'
    first documents up to SLICE_DOCUMENTS."""
    from evaluate import Dataset

    queries = dict(list(dataset.queries.items())[:SLICE_QUERIES])
    wanted = {doc for q in queries for doc in dataset.qrels[q] if doc in dataset.documents}
    for doc in dataset.documents:
        if len(wanted) >= SLICE_DOCUMENTS:
            break
        wanted.add(doc)
    keep = [doc for doc in dataset.documents if doc in wanted]
    return Dataset(
        documents={d: dataset.documents[d] for d in keep},
        titles={d: dataset.titles[d] for d in keep},
        queries=queries,
        qrels={q: dataset.qrels[q] for q in queries},
    )


def quick_database(ctx: Context, dataset) -> str:
    from evaluate import is_loaded, load_corpus

    url = ctx.url(QUICK_DB)
    if database_exists(ctx.server_url, QUICK_DB) and is_loaded(url, dataset.documents):
        return url
    log(f"loading {len(dataset.documents)} documents into {QUICK_DB} (queue + worker)")
    create_database(ctx.server_url, QUICK_DB)
    load_corpus(url, dataset)
    return url


def run(ctx: Context) -> dict:
    if not ctx.has_corpus:
        log(f"no BEIR corpus at {ctx.corpus}: skipping retrieval quality")
        return {"skipped": f"no BEIR corpus at {ctx.corpus}"}
    from evaluate import describe_server, evaluate, load_dataset

    dataset = load_dataset(ctx.corpus.resolve())
    if ctx.quick:
        dataset = quick_dataset(dataset)
        url, reused = quick_database(ctx, dataset), None
    else:
        load = ensure_eval_database(ctx)
        url, reused = load["url"], load["reused"]
    log(f"evaluating {len(dataset.queries)} queries on {len(dataset.documents)} documents")
    methods = evaluate(url, dataset)
    for scores in methods.values():
        scores.pop("per_query")  # the report needs the means; bench/eval.json has the rest
    return {
        "documents": len(dataset.documents),
        "queries": len(dataset.queries),
        "reused": reused,
        **describe_server(url),
        "methods": methods,
    }


def report(r: dict, ctx: Context) -> list[str]:
    if "skipped" in r:
        return [f"Skipped: {r['skipped']} (pass `CORPUS=dir`).", ""]
    from evaluate import LATENCY_ROUNDS, METHODS, duplicate_notes, table

    methods = r["methods"]

    def draw(fig) -> None:
        ax = fig.add_subplot()
        names = list(methods)
        ndcg = [methods[n]["ndcg@10"] for n in names]
        colors = ["#2f6db5" if n.startswith("pgseek") else "#999999" for n in names]
        bars = ax.barh(names[::-1], ndcg[::-1], color=colors[::-1])
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xlabel("nDCG@10 (blue: pgseek.hybrid_search, grey: plain recipes)")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(
            f"Retrieval quality, {r['documents']:,} documents, {r['queries']} judged queries",
            fontsize=10,
        )

    figure = ctx.figure(
        "quality_ndcg.png",
        draw,
        f"{ctx.corpus.name}: {r['documents']:,} documents, {r['queries']} judged queries, "
        f"{r['model']}",
    )
    corpus = (
        f"`{ctx.corpus.name}` ({r['documents']:,} documents"
        + (
            f", a quick slice of {r['queries']} queries: these figures say nothing about quality"
            if ctx.quick
            else ", the database "
            + ("reused from `make eval`" if r["reused"] else "loaded by this run")
        )
        + ")"
    )
    lines = [
        f"Corpus: {corpus}, embedded in the database by {r['model']}; {r['queries']} judged "
        "queries; nDCG@10 with graded gains, recall@100 of grade >= 1 documents. Latency: "
        "client round trip of the whole query, 100 rows fetched, query embeddings cached, "
        f"{LATENCY_ROUNDS} passes. The same evaluation as `make eval` (scripts/evaluate.py).",
        "",
        *table(methods),
        "",
        *duplicate_notes(methods),
        "Methods (q = the query text):",
        "",
        *(f"- **{m.name}**: {m.description}" for m in METHODS),
        "",
        figure,
        "",
    ]
    return lines
