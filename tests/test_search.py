"""search_similar() and hybrid_search(): results, ordering, scores per metric and mode,
thresholds, the filtering guarantee, pagination, plans, settings hygiene and errors."""

from __future__ import annotations

import math
import random

import psycopg
import pytest
from psycopg import errors

from pgtest import Database, with_dbname

DIMS = 64
ROWS = 10_000
# metadata key -> rows that have it: 50%, 10%, 1% and 0.1% of the corpus
SELECTIVITY = {"half": 5000, "tenth": 1000, "hundredth": 100, "thousandth": 10}


def rebuild_vector_index(conn) -> None:
    """Runs pgseek.vector_index_ddl(): builds the vector index pgseek.config asks for."""
    for (statement,) in conn.execute("select pgseek.vector_index_ddl()").fetchall():
        conn.execute(statement)


@pytest.fixture(scope="module")
def corpus(server, template_db) -> Database:
    """10,000 documents with 64-d unit vectors around 40 random centres (clustered, as
    real embeddings are; seeded), metadata flags of known selectivity and a few words
    each; embedding_mode 'off' (clients supply the vectors)."""
    name = server.create_database(template=template_db)
    db = Database(name, with_dbname(server.url, name))
    with db.connect() as conn:
        conn.execute(
            "update pgseek.config set embedding_dimensions = %s, embedding_mode = 'off'", (DIMS,)
        )
        conn.execute("select setseed(0.42)")
        conn.execute(
            "create table public.centre as select c, array_agg(random() - 0.5) as v"
            " from generate_series(0, 39) as c, generate_series(1, %s) as j group by c",
            (DIMS,),
        )
        conn.execute(
            """
            insert into pgseek.documents (content, metadata, embedding)
            select
                format('document %%s about %%s', i,
                    (array['postgres', 'vectors', 'search', 'cron'])[i %% 4 + 1]),
                jsonb_strip_nulls(jsonb_build_object(
                    'half', case when i %% 2 = 0 then true end,
                    'tenth', case when i %% 10 = 0 then true end,
                    'hundredth', case when i %% 100 = 0 then true end,
                    'thousandth', case when i %% 1000 = 0 then true end)),
                (select l2_normalize(array_agg(x.v + 0.35 * (random() - 0.5))::vector)
                 from unnest((select c.v from centre as c where c.c = i %% 37)) as x (v))
            from generate_series(0, %s - 1) as i
            """,
            (ROWS,),
        )
        rebuild_vector_index(conn)
        conn.execute("analyze pgseek.documents")
        conn.execute("select pgseek.refresh_text_stats()")
    yield db
    server.drop_database(name)


@pytest.fixture
def c(corpus):
    with corpus.connect() as conn:
        yield conn


def query_vector(conn, seed: int) -> str:
    """A query from the corpus's distribution: a centre plus noise, normalized."""
    rng = random.Random(seed)
    centre = conn.execute("select v from public.centre where c = %s", (seed % 40,)).fetchone()[0]
    v = [float(x) + 0.35 * (rng.random() - 0.5) for x in centre]
    norm = math.sqrt(sum(x * x for x in v))
    return "[" + ",".join(f"{x / norm:.6f}" for x in v) + "]"


def exact_neighbours(conn, query: str, k: int, filter_json: str | None) -> list:
    conn.execute("set enable_indexscan = off")
    try:
        return [
            r[0]
            for r in conn.execute(
                "select id from pgseek.documents"
                " where (%s::jsonb is null or metadata @> %s::jsonb)"
                " order by embedding <=> %s::vector, id limit %s",
                (filter_json, filter_json, query, k),
            )
        ]
    finally:
        conn.execute("reset enable_indexscan")


# --- search_similar ----------------------------------------------------------------


def test_search_similar_returns_k_rows_best_first(c):
    q = query_vector(c, 1)
    rows = c.execute(
        "select id, similarity, distance, rank from pgseek.search_similar(%s::vector, 10)", (q,)
    ).fetchall()
    assert [r[3] for r in rows] == list(range(1, 11))
    assert all(abs(r[1] - (1 - r[2])) < 1e-9 for r in rows)  # cosine: 1 - distance
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)
    exact = exact_neighbours(c, q, 10, None)
    assert len(set(exact) & {r[0] for r in rows}) >= 9


@pytest.mark.parametrize(
    ("metric", "check"),
    [
        ("l2", lambda sim, dist: abs(sim - 1 / (1 + dist)) < 1e-9),
        ("inner_product", lambda sim, dist: abs(sim + dist) < 1e-9),
    ],
)
def test_metrics_report_their_documented_similarity(c, metric, check):
    q = query_vector(c, 2)
    rows = c.execute(
        "select id, similarity, distance from pgseek.search_similar(%s::vector, 5, metric => %s)",
        (q, metric),
    ).fetchall()
    assert len(rows) == 5
    assert all(check(sim, dist) for _, sim, dist in rows)
    operator = {"l2": "<->", "inner_product": "<#>"}[metric]
    expected = c.execute(
        f"select id from pgseek.documents order by embedding {operator} %s::vector, id limit 5",
        (q,),
    ).fetchall()
    assert [r[0] for r in rows] == [r[0] for r in expected]  # no index: an exact scan


def test_min_similarity_is_a_floor(c):
    q = query_vector(c, 3)
    top = c.execute("select similarity from pgseek.search_similar(%s::vector, 10)", (q,)).fetchall()
    floor = top[4][0]
    rows = c.execute(
        "select similarity from pgseek.search_similar(%s::vector, 10, min_similarity => %s)",
        (q, floor),
    ).fetchall()
    assert len(rows) == 5 and all(r[0] >= floor for r in rows)


@pytest.mark.parametrize("key", list(SELECTIVITY))
@pytest.mark.parametrize("exact_rows", [3000, 0], ids=["default", "index-only"])
def test_filtering_guarantee(c, key, exact_rows):
    """Exactly k rows whenever k rows match, recall@10 >= 0.95 against exact search, at
    50%, 10%, 1% and 0.1% selectivity; also when the index path is forced."""
    c.execute("update pgseek.config set exact_search_max_rows = %s", (exact_rows,))
    filter_json = f'{{"{key}": true}}'
    recalls = []
    try:
        for seed in range(10):
            q = query_vector(c, 100 + seed)
            rows = c.execute(
                "select id, distance from pgseek.search_similar(%s::vector, 10, filter => %s)",
                (q, filter_json),
            ).fetchall()
            got = [r[0] for r in rows]
            assert len(got) == 10
            # best first, also after an iterative scan, whose relaxed order the function
            # must re-sort (a plain subquery let the planner skip that sort)
            assert [r[1] for r in rows] == sorted(r[1] for r in rows)
            exact = exact_neighbours(c, q, 10, filter_json)
            recalls.append(len(set(got) & set(exact)) / 10)
    finally:
        c.execute("update pgseek.config set exact_search_max_rows = 3000")
    assert sum(recalls) / len(recalls) >= 0.95, recalls


def test_plans_use_hnsw_without_a_selective_filter_and_gin_with_one(c):
    q = query_vector(c, 4)
    plain = "\n".join(r[0] for r in c.execute("select pgseek.explain_search(%s::vector)", (q,)))
    assert "-- index scan" in plain
    assert f"Index Scan using documents_embedding_{DIMS}_hnsw_cosine" in plain
    half = "\n".join(
        r[0]
        for r in c.execute(
            "select pgseek.explain_search(%s::vector, filter => '{\"half\": true}')", (q,)
        )
    )
    assert f"Index Scan using documents_embedding_{DIMS}_hnsw_cosine" in half
    # the iterative scan's rows (relaxed order) are sorted again, fully: the planner
    # must not take the index's order as given (an Incremental Sort on a "presorted"
    # distance returns them as the scan found them)
    assert "Incremental Sort" not in half and "Sort Key: n.distance, n.id" in half
    rare = "\n".join(
        r[0]
        for r in c.execute(
            "select pgseek.explain_search(%s::vector, filter => '{\"thousandth\": true}')", (q,)
        )
    )
    assert "-- exact scan" in rare
    assert "Bitmap Index Scan on documents_metadata_idx" in rare


def test_pages_do_not_overlap(c):
    q = query_vector(c, 5)
    page1 = [r[0] for r in c.execute("select id from pgseek.search_similar(%s::vector, 10)", (q,))]
    page2 = [
        r[0]
        for r in c.execute(
            "select id from pgseek.search_similar(%s::vector, 10, page_offset => 10)", (q,)
        )
    ]
    both = [r[0] for r in c.execute("select id from pgseek.search_similar(%s::vector, 20)", (q,))]
    assert not set(page1) & set(page2)
    assert page1 + page2 == both


def pages(conn, q: str, pages: int, k: int = 10, **args) -> list:
    """The ids of `pages` consecutive pages of search_similar, page 1 first."""
    named = "".join(f", {name} => %({name})s" for name in args)
    sql = f"select id from pgseek.search_similar(%(q)s::vector, %(k)s{named}, page_offset => %(o)s)"
    return [
        r[0] for p in range(pages) for r in conn.execute(sql, {"q": q, "k": k, "o": p * k, **args})
    ]


def test_pages_are_slices_of_one_ranking_where_the_index_is_poor(conn):
    """Random 384-d vectors, where HNSW's later batches often hold nearer rows than its
    first: under a filter (iterative scans) each page must go on where the last ended."""
    load_indexed_random_rows(conn, seed=0.5, dims=384, rows=4000)
    conn.execute("update pgseek.config set exact_search_max_rows = 0")  # the index path
    rng = random.Random(5)
    for _ in range(5):
        q = "[" + ",".join(f"{rng.random() - 0.5:.5f}" for _ in range(384)) + "]"
        paged = pages(conn, q, 10, filter='{"even": true}')
        assert len(set(paged)) == 100  # (relaxed order, each page its own depth: 94 to 99)
        assert paged == pages(conn, q, 1, k=100, filter='{"even": true}')


@pytest.mark.parametrize("key", [None, "half", "tenth"])
def test_pages_are_slices_of_one_ranking_also_under_a_filter(c, key):
    """Ten pages of 10 are the first 100 rows of one search: nothing twice, nothing
    skipped, also where the index is scanned iteratively (a filter: each page scans as
    deep as it needs, and a relaxed-order scan would rank each depth differently)."""
    q = query_vector(c, 21)
    args = {"filter": f'{{"{key}": true}}'} if key else {}
    paged = pages(c, q, 10, **args)
    assert len(set(paged)) == 100
    assert paged == pages(c, q, 1, k=100, **args)


def test_pages_agree_past_dead_entries_and_past_ef_search(conn):
    """Pages whose depth a plain scan still serves and deeper ones that must go on past
    dead entries (or past ef_search) are slices of the same ranking."""
    load_indexed_random_rows(conn, seed=0.3)
    q = "[0.1,0.2,-0.3,0.4,-0.2,0.1,0.3,-0.1]"
    top = [r[0] for r in conn.execute(NEAREST, (q, 100))]
    conn.execute("delete from pgseek.documents where id = any(%s)", (top[1::2],))
    assert len(plain_scan(conn, q, ef_search=100)) < 60
    paged = pages(conn, q, 15)  # 150 rows: past ef_search (100) too
    assert len(set(paged)) == 150
    assert paged == pages(conn, q, 1, k=150)
    assert paged[:10] == pages(conn, q, 1, min_similarity=-1.0)


def test_the_unfiltered_search_keeps_one_plan_through_the_index(corpus):
    """Without a filter search_similar runs a static statement (pgseek.nearest_indexed,
    written for the configured dimensions): planned once per session, generic, and still
    an HNSW index scan (auto_explain of the nested statements, after several calls)."""
    notices: list[str] = []
    with psycopg.connect(corpus.url, autocommit=True) as conn:
        q = query_vector(conn, 21)
        for _ in range(7):
            conn.execute("select * from pgseek.search_similar(%s::vector, 10)", (q,)).fetchall()
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("load 'auto_explain'")
        for setting, value in (
            ("log_min_duration", "0"),
            ("log_nested_statements", "on"),
            ("log_level", "notice"),
        ):
            conn.execute(f"set auto_explain.{setting} = {value}")
        conn.execute("select * from pgseek.search_similar(%s::vector, 10)", (q,)).fetchall()
    plan = next(n for n in notices if "pgseek.documents as d" in n)
    assert "operator(public.<=>)" in plan  # nearest_indexed()'s statement, not a dynamic one
    assert f"Index Scan using documents_embedding_{DIMS}_hnsw_cosine" in plan
    assert "$1" in plan  # a generic plan: the query vector is a parameter, not a constant


def test_the_static_search_follows_a_change_of_dimensions(conn):
    """pgseek.nearest_indexed() is rewritten when pgseek.config's dimensions or metric
    change (trigger), and a session that searched before sees the new one."""
    conn.execute("update pgseek.config set embedding_dimensions = 3, embedding_mode = 'off'")
    conn.execute(
        "insert into pgseek.documents (content, embedding) values"
        " ('a', '[1,0,0]'), ('b', '[0,1,0]')"
    )
    rows = conn.execute("select content from pgseek.search_similar('[1,0.1,0]', 1)").fetchall()
    assert rows == [("a",)]
    conn.execute("delete from pgseek.documents")
    conn.execute("update pgseek.config set embedding_dimensions = 2, distance_metric = 'l2'")
    conn.execute(
        "insert into pgseek.documents (content, embedding) values ('c', '[3,4]'), ('d', '[0,1]')"
    )
    rows = conn.execute(
        "select content, distance from pgseek.search_similar('[0,0]', 2, metric => 'l2')"
    ).fetchall()
    assert rows == [("d", 1.0), ("c", 5.0)]
    comment = conn.execute(
        "select obj_description('pgseek.nearest_indexed'::regproc, 'pg_proc')"
    ).fetchone()[0]
    assert comment.endswith("for 2 dimensions, l2")


NEAREST = "select id from pgseek.documents order by embedding <=> %s::vector, id limit %s"


def load_indexed_random_rows(conn, seed: float, dims: int = 8, rows: int = 3000) -> None:
    """Rows of random vectors (3000 of 8-d), the configured vector index built, analyzed
    (so that the planner takes the index), autovacuum off (deleted rows stay in the
    index); every other row has metadata {"even": true}."""
    conn.execute(
        "update pgseek.config set embedding_dimensions = %s, embedding_mode = 'off'", (dims,)
    )
    conn.execute("alter table pgseek.documents set (autovacuum_enabled = false)")
    conn.execute("select setseed(%s)", (seed,))
    conn.execute(
        "insert into pgseek.documents (content, metadata, embedding)"
        " select 'row ' || i, case when i %% 2 = 0 then '{\"even\": true}' else '{}' end::jsonb,"
        # dims + i * 0: a correlated subquery, so that every row draws a vector of its own
        " (select array_agg(random() - 0.5) from generate_series(1, %s + i * 0))::vector"
        " from generate_series(1, %s) as i",
        (dims, rows),
    )
    rebuild_vector_index(conn)
    conn.execute("analyze pgseek.documents")


def delete_nearest(conn, q: str, n: int) -> None:
    """Deletes the n rows nearest q (committed: dead, still in the index)."""
    conn.execute(f"delete from pgseek.documents where id in ({NEAREST})", (q, n))


def plain_scan(conn, q: str, ef_search: int) -> list:
    """The rows a plain HNSW scan of ef_search entries returns (at most ef_search)."""
    with conn.transaction():
        conn.execute(f"set local hnsw.ef_search = {int(ef_search)}")
        return conn.execute(
            "select id from pgseek.documents where vector_dims(embedding) = 8"
            " order by embedding::vector(8) <=> %s::vector(8) limit %s",
            (q, ef_search),
        ).fetchall()


def test_hybrid_vector_candidates_go_on_past_dead_entries(conn):
    """hybrid_search's vector branch also scans the index plainly without a filter: it
    agrees with search_similar, and when deleted rows not yet vacuumed take places among
    the nearest entries it goes on iteratively and still finds `candidates` rows."""
    load_indexed_random_rows(conn, seed=0.3)
    q = "[0.1,0.4,-0.3,0.2,0.2,-0.1,0.3,0.1]"
    hybrid = (
        "select id, vector_rank from pgseek.hybrid_search('row', %s::vector, k => %s,"
        " mode => 'vector') order by vector_rank"
    )
    similar = "select id from pgseek.search_similar(%s::vector, 10)"
    assert [r[0] for r in conn.execute(hybrid, (q, 10))] == [
        r[0] for r in conn.execute(similar, (q,))
    ]
    delete_nearest(conn, q, 15)
    assert len(plain_scan(conn, q, ef_search=100)) < 100  # the 15 nearest entries are dead
    rows = conn.execute(hybrid, (q, 100)).fetchall()
    assert [r[1] for r in rows] == list(range(1, 101))
    assert len({r[0] for r in rows}) == 100
    exact = {r[0] for r in conn.execute(NEAREST, (q, 100))}
    assert len({r[0] for r in rows} & exact) >= 95


def test_a_scan_short_of_dead_entries_goes_on_past_them(conn):
    """Without a filter search_similar scans the index plainly (not iteratively), which
    yields at most ef_search index entries: when the nearest ones belong to deleted rows
    not yet vacuumed, it must go on iteratively and still return k rows, ranked, best
    first, with no row twice, pages apart."""
    load_indexed_random_rows(conn, seed=0.7)
    q = "[0.3,-0.2,0.1,0.4,-0.1,0.2,0.3,-0.4]"
    delete_nearest(conn, q, 15)
    assert len(plain_scan(conn, q, ef_search=10)) < 10  # 10 entries: the 15 nearest are dead
    exact = [r[0] for r in conn.execute(NEAREST, (q, 20))]
    page1 = conn.execute(
        "select id, distance, rank from pgseek.search_similar(%s::vector, 10, ef_search => 10)",
        (q,),
    ).fetchall()
    page2 = conn.execute(
        "select id, distance, rank from pgseek.search_similar(%s::vector, 10, ef_search => 10,"
        " page_offset => 10)",
        (q,),
    ).fetchall()
    assert [r[2] for r in page1 + page2] == list(range(1, 21))
    assert [r[1] for r in page1] == sorted(r[1] for r in page1)
    ids = [r[0] for r in page1 + page2]
    assert len(set(ids)) == 20
    assert len(set(ids[:10]) & set(exact[:10])) >= 9


def test_fewer_rows_than_asked_for_come_back_ranked(conn):
    conn.execute("update pgseek.config set embedding_dimensions = 3, embedding_mode = 'off'")
    conn.execute(
        "insert into pgseek.documents (content, embedding) values"
        " ('a', '[1,0,0]'), ('b', '[1,1,0]'), ('c', '[0,1,1]')"
    )
    rebuild_vector_index(conn)
    rows = conn.execute("select content, rank from pgseek.search_similar('[1,0,0]', 10)").fetchall()
    assert rows == [("a", 1), ("b", 2), ("c", 3)]
    rows = conn.execute(
        "select content, rank from pgseek.search_similar('[1,0,0]', 10, page_offset => 2)"
    ).fetchall()
    assert rows == [("c", 3)]


def test_callers_settings_are_left_alone(corpus, c):
    q = query_vector(c, 6)
    with psycopg.connect(corpus.url) as conn:  # one transaction, like a pooled client
        conn.execute("set hnsw.ef_search = 17")
        conn.execute("select count(*) from pgseek.search_similar(%s::vector, 5)", (q,))
        conn.execute(
            "select count(*) from pgseek.search_similar(%s::vector, 5,"
            " filter => '{\"thousandth\": true}')",
            (q,),
        )
        conn.execute("select count(*) from pgseek.hybrid_search('postgres', %s::vector)", (q,))
        settings = conn.execute(
            "select current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan'),"
            " current_setting('enable_indexscan'), current_setting('ivfflat.probes')"
        ).fetchone()
    assert settings == ("17", "off", "on", "1")


def test_recall_self_check(c):
    queries, neighbours, recall = c.execute("select * from pgseek.check_recall(10, 10)").fetchone()
    assert (queries, neighbours) == (10, 10)
    assert recall >= 0.9


def test_recall_self_check_measures_the_configured_metric(c):
    """With an l2 index, check_recall compares that index with an exact l2 scan (not an
    exact cosine scan with itself, which always agrees): an IVFFlat index probing 1 of
    100 lists misses neighbours, and the check says so."""
    c.execute(
        "update pgseek.config set distance_metric = 'l2', vector_index = 'ivfflat',"
        " ivfflat_lists = 100, ivfflat_probes = 1"
    )
    try:
        rebuild_vector_index(c)
        recall = c.execute("select recall from pgseek.check_recall(20, 50)").fetchone()[0]
    finally:
        c.execute(
            "update pgseek.config set distance_metric = 'cosine', vector_index = 'hnsw',"
            " ivfflat_lists = null, ivfflat_probes = 10"
        )
        rebuild_vector_index(c)
    assert 0 < recall < 0.99


# --- hybrid_search -------------------------------------------------------------------


def test_rrf_scores_follow_the_formula(c):
    q = query_vector(c, 7)
    rows = c.execute(
        "select score, vector_rank, text_rank from pgseek.hybrid_search('postgres', %s::vector,"
        " k => 20, mode => 'rrf')",
        (q,),
    ).fetchall()
    assert len(rows) == 20
    for score, vr, tr in rows:
        expected = (0.7 / (60 + vr) if vr else 0) + (0.3 / (60 + tr) if tr else 0)
        assert abs(score - expected) < 1e-12
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)


def test_convex_scores_follow_the_formula(c):
    """The default mode: 0.7 * similarity min-max normalized over the vector candidates
    + 0.3 * BM25 / the query's bound * the share of query terms matched, recomputed here
    from the branches themselves."""
    q = query_vector(c, 7)
    text = "postgres vector search"
    sims = [
        r[0]
        for r in c.execute("select similarity from pgseek.search_similar(%s::vector, 100)", (q,))
    ]
    keyword = {
        i: (score, coverage, bound)
        for i, score, coverage, bound in c.execute(
            "select * from pgseek.text_candidates(%s, 100)", (text,)
        )
    }
    rows = c.execute(
        "select id, score, vector_rank, text_rank, vector_similarity, text_score"
        " from pgseek.hybrid_search(%s, %s::vector, k => 100, candidates => 100)",
        (text, q),
    ).fetchall()
    assert len(rows) == 100
    lo, hi = min(sims), max(sims)
    assert any(vr is None for _, _, vr, _, _, _ in rows)  # keyword-only rows rank too
    for i, score, _vr, tr, similarity, text_score in rows:
        v = min(1.0, max(0.0, (similarity - lo) / (hi - lo)))
        t = 0.0
        if tr is not None:
            bm25, coverage, bound = keyword[i]
            assert text_score == bm25 and 0 < coverage <= 1 and 0 < bm25 < bound
            t = bm25 / bound * coverage
        assert abs(score - (0.7 * v + 0.3 * t)) < 1e-9
        assert 0 <= score <= 1
    exact = dict(
        c.execute(
            "select id, 1 - (embedding <=> %s::vector) from pgseek.documents where id = any(%s)",
            (q, [r[0] for r in rows]),
        ).fetchall()
    )
    assert all(abs(r[4] - exact[r[0]]) < 1e-9 for r in rows)  # exact, also keyword-only
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


def test_rows_found_by_one_branch_still_rank(c):
    q = query_vector(c, 8)
    rows = c.execute(
        "select vector_rank, text_rank from pgseek.hybrid_search('postgres', %s::vector, k => 100,"
        " candidates => 60)",
        (q,),
    ).fetchall()
    assert any(vr is None for vr, _ in rows) and any(tr is None for _, tr in rows)


@pytest.mark.parametrize("mode", ["weighted", "dbsf"])
def test_normalized_modes_score_between_0_and_1(c, mode):
    q = query_vector(c, 9)
    rows = c.execute(
        "select score from pgseek.hybrid_search('search', %s::vector, k => 50, mode => %s)",
        (q, mode),
    ).fetchall()
    assert len(rows) == 50
    assert all(0 <= r[0] <= 1 + 1e-9 for r in rows)


def test_vector_mode_matches_search_similar(c):
    q = query_vector(c, 10)
    hybrid = c.execute(
        "select id from pgseek.hybrid_search(null, %s::vector, k => 10, mode => 'vector')", (q,)
    ).fetchall()
    similar = c.execute("select id from pgseek.search_similar(%s::vector, 10)", (q,)).fetchall()
    assert hybrid == similar


def test_hybrid_filter_and_threshold(c):
    q = query_vector(c, 11)
    rows = c.execute(
        "select metadata, vector_similarity from pgseek.hybrid_search('cron', %s::vector, k => 10,"
        " filter => '{\"thousandth\": true}')",
        (q,),
    ).fetchall()
    assert len(rows) == 10 and all(r[0].get("thousandth") for r in rows)
    floor = sorted(r[1] for r in rows)[5]
    kept = c.execute(
        "select vector_similarity from pgseek.hybrid_search('cron', %s::vector, k => 10,"
        " filter => '{\"thousandth\": true}', min_similarity => %s)",
        (q, floor),
    ).fetchall()
    assert 0 < len(kept) < 10 and all(r[0] >= floor for r in kept)


@pytest.mark.parametrize("mode", ["text", "convex"])
def test_hybrid_threshold_keeps_keyword_only_rows_above_it(c, mode):
    """min_similarity floors the vector_similarity every row reports, also of rows only
    the keyword branch found."""
    q = query_vector(c, 13)
    sql = (
        "select id, vector_similarity, vector_rank from pgseek.hybrid_search('cron', %s::vector,"
        " k => 300, mode => %s, candidates => 100, min_similarity => %s)"
    )
    rows = c.execute(sql, (q, mode, None)).fetchall()
    keyword_only = [r for r in rows if r[2] is None]
    assert keyword_only and all(r[1] is not None for r in keyword_only)
    floor = min(r[1] for r in keyword_only)
    kept = c.execute(sql, (q, mode, floor)).fetchall()
    assert {r[0] for r in kept} == {r[0] for r in rows if r[1] >= floor}
    assert any(r[2] is None for r in kept)


def test_hybrid_pages_do_not_overlap(c):
    q = query_vector(c, 12)
    sql = "select id from pgseek.hybrid_search('vectors', %s::vector, k => 10, page_offset => %s)"
    page1 = [r[0] for r in c.execute(sql, (q, 0))]
    page2 = [r[0] for r in c.execute(sql, (q, 10))]
    both = [r[0] for r in c.execute(sql.replace("k => 10", "k => 20"), (q, 0))]
    assert len(page1) == len(page2) == 10
    assert not set(page1) & set(page2)
    assert page1 + page2 == both


@pytest.mark.parametrize("mode", ["convex", "rrf", "weighted", "dbsf"])
def test_hybrid_pages_of_any_size_are_slices_of_one_ranking(c, mode):
    """The candidates (and so the normalization and every score) do not depend on k: a
    page of 10 and a page of 100 agree on their shared rows and scores, also deep ones."""
    q = query_vector(c, 14)
    sql = (
        "select id, score from pgseek.hybrid_search('postgres search', %s::vector, k => %s,"
        " mode => %s, page_offset => %s)"
    )
    ranking = c.execute(sql, (q, 100, mode, 0)).fetchall()
    assert len(ranking) == 100
    assert c.execute(sql, (q, 10, mode, 0)).fetchall() == ranking[:10]
    assert c.execute(sql, (q, 30, mode, 60)).fetchall() == ranking[60:90]


def test_stop_words_only_and_tsquery_syntax_are_harmless(c):
    q = query_vector(c, 13)
    assert (
        c.execute(
            "select count(*) from pgseek.hybrid_search('the of and', mode => 'text')"
        ).fetchone()[0]
        == 0
    )
    assert (
        c.execute(
            "select count(*) from pgseek.hybrid_search('the of and', %s::vector)", (q,)
        ).fetchone()[0]
        == 10
    )
    for text in ["'); drop table pgseek.documents; --", "a & | ! :* <-> (((", "\\' \\\\ ''"]:
        c.execute("select count(*) from pgseek.hybrid_search(%s, %s::vector)", (text, q))
        c.execute("select count(*) from pgseek.hybrid_search(%s, mode => 'text')", (text,))
    assert c.execute("select count(*) from pgseek.documents").fetchone()[0] == ROWS


def test_snippets_highlight_the_query_terms(c):
    q = query_vector(c, 14)
    snippet = c.execute(
        "select snippet from pgseek.hybrid_search('cron', %s::vector, k => 1, mode => 'text',"
        " snippets => true)",
        (q,),
    ).fetchone()[0]
    assert "<b>cron</b>" in snippet


BAD_ARGUMENTS = [
    ("select * from pgseek.search_similar(%(q)s::vector, 0)", "k must be between 1 and 1000"),
    ("select * from pgseek.search_similar(%(q)s::vector, 1000000)", "k must be between"),
    ("select * from pgseek.search_similar(null::vector)", "query_embedding must not be NULL"),
    ("select * from pgseek.search_similar('[1,2,3]'::vector)", "query_embedding has 3 dimensions"),
    ("select * from pgseek.search_similar(%(q)s::vector, metric => 'hamming')", "metric must be"),
    (
        "select * from pgseek.search_similar(%(q)s::vector, metric => 'hamming',"
        " min_similarity => 0.5)",
        "metric must be",
    ),
    (
        "select * from pgseek.search_similar(%(q)s::vector, metric => null, min_similarity => 0)",
        "metric must be",
    ),
    (
        "select * from pgseek.search_similar(%(q)s::vector, filter => '[1]')",
        "filter must be a JSON object",
    ),
    ("select * from pgseek.search_similar(%(q)s::vector, ef_search => 0)", "ef_search must be"),
    (
        "select * from pgseek.search_similar(%(q)s::vector, min_similarity => 'NaN')",
        "min_similarity must be a finite",
    ),
    ("select * from pgseek.search_similar(%(zero)s::vector)", "zero vector"),
    ("select * from pgseek.vector_candidates(%(q)s::vector, -1)", "depth must be between"),
    ("select * from pgseek.vector_candidates(%(q)s::vector, null)", "depth must be between"),
    ("select * from pgseek.hybrid_search('x', %(q)s::vector, mode => 'magic')", "mode must be"),
    (
        "select * from pgseek.hybrid_search('x', %(q)s::vector, vector_weight => 1.5)",
        "vector_weight and text_weight must be between 0 and 1",
    ),
    (
        "select * from pgseek.hybrid_search('x', %(q)s::vector, vector_weight => 0,"
        " text_weight => 0)",
        "must not both be 0",
    ),
    ("select * from pgseek.hybrid_search('x', %(q)s::vector, k => -1)", "k must be between"),
    ("select * from pgseek.hybrid_search('x', %(q)s::vector, rrf_k => 0)", "rrf_k must be"),
    ("select * from pgseek.hybrid_search('x', %(q)s::vector, candidates => 0)", "candidates must"),
    (
        "select * from pgseek.hybrid_search('x', %(q)s::vector, filter => '\"a\"')",
        "filter must be a JSON object",
    ),
    (
        "select * from pgseek.hybrid_search('x', %(q)s::vector, page_offset => -1)",
        "page_offset must be",
    ),
    ("select * from pgseek.hybrid_search(null)", "query_text must not be empty"),
    ("select * from pgseek.hybrid_search('   ', mode => 'text')", "query_text must not be empty"),
    (
        "select * from pgseek.hybrid_search('x', '[1,2]'::vector)",
        "query_embedding has 2 dimensions",
    ),
    # explain_search takes search_similar's arguments and checks them the same way
    ("select pgseek.explain_search(%(q)s::vector, 0)", "k must be between 1 and 1000"),
    ("select pgseek.explain_search(%(q)s::vector, filter => '[1]')", "filter must be a JSON"),
    ("select pgseek.explain_search(%(q)s::vector, ef_search => 0)", "ef_search must be"),
    ("select pgseek.explain_search(%(q)s::vector, probes => -1)", "probes must be"),
    ("select pgseek.explain_search(%(q)s::vector, metric => 'x')", "metric must be"),
]


@pytest.mark.parametrize(("sql", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_named_with_22023(c, sql, message):
    params = {"q": query_vector(c, 15), "zero": "[" + ",".join(["0"] * DIMS) + "]"}
    with pytest.raises(errors.InvalidParameterValue, match=message):
        c.execute(sql, params).fetchall()


# --- BM25 and in-database query embedding, on a small real-text corpus ------------------


def test_bm25_weighs_rare_terms_above_common_ones(conn):
    conn.execute("update pgseek.config set embedding_mode = 'off'")
    conn.execute(
        "insert into pgseek.documents (content) select 'postgres database number ' || i"
        " from generate_series(1, 50) as i"
    )
    conn.execute("insert into pgseek.documents (content) values ('pgvector stores embeddings')")
    conn.execute(
        "insert into pgseek.documents (content) values ('postgres with pgvector stores vectors')"
    )
    conn.execute("select pgseek.refresh_text_stats()")
    rows = conn.execute(
        "select content, text_score from pgseek.hybrid_search('postgres pgvector', mode => 'text',"
        " k => 5)"
    ).fetchall()
    # The rare term decides: both pgvector documents far above the 50 postgres ones (a
    # term in 50 of 52 documents has an IDF near 0; ts_rank would rank them alike).
    assert {rows[0][0], rows[1][0]} == {
        "postgres with pgvector stores vectors",
        "pgvector stores embeddings",
    }
    assert rows[1][1] > 5 * rows[2][1]


def test_query_text_is_embedded_in_the_database(conn):
    conn.execute(
        "insert into pgseek.documents (content) values ('Cats are small domesticated mammals'),"
        " ('PostgreSQL schedules jobs with the pg_cron extension'),"
        " ('HNSW is a graph index for approximate nearest neighbours')"
    )
    assert conn.execute("select pgseek.process_embedding_queue()").fetchone()[0] == 3
    conn.execute("select pgseek.refresh_text_stats()")
    rows = conn.execute(
        "select content, vector_rank from pgseek.hybrid_search('a pet kitten', k => 3)"
    ).fetchall()
    assert rows[0][0].startswith("Cats") and rows[0][1] == 1
    cached = conn.execute("select count(*) from pgseek.query_embeddings").fetchone()[0]
    conn.execute("select * from pgseek.hybrid_search('a pet kitten', k => 3)").fetchall()
    assert conn.execute("select count(*) from pgseek.query_embeddings").fetchone()[0] == cached


def test_bm25_candidates_are_exactly_the_best_by_bm25(conn):
    """text_candidates() skips documents that only contain common query terms when a first
    pass proves they cannot reach the top (MaxScore): its rows and scores must still be
    exactly the best `depth` by BM25 over every document, computed here independently
    from the documents' lexemes (a Zipf-distributed vocabulary, so queries mix rare and
    common terms, with repeated terms for tf > 1)."""
    conn.execute("update pgseek.config set embedding_mode = 'off'")
    rng = random.Random(7)
    vocabulary = [f"w{i:03d}" for i in range(400)]
    weights = [1 / (i + 1) for i in range(len(vocabulary))]
    contents = [
        " ".join(rng.choices(vocabulary, weights, k=rng.randint(4, 40))) for _ in range(3000)
    ]
    with conn.cursor().copy("copy pgseek.documents (content) from stdin") as copy:
        for content in contents:
            copy.write_row((content,))
    conn.execute("select pgseek.refresh_text_stats()")
    documents, avg_length = conn.execute(
        "select documents, avg_length from pgseek.text_stats_summary"
    ).fetchone()
    doc_freq = dict(conn.execute("select term, doc_freq from pgseek.text_stats").fetchall())
    frequencies = {
        id_: dict(zip(lexemes, counts, strict=True))
        for id_, lexemes, counts in conn.execute(
            "select id, array_agg(t.lexeme), array_agg(cardinality(t.positions))"
            " from pgseek.documents, unnest(fts) as t group by id"
        )
    }

    def bm25(terms: list[str]) -> dict:
        idf = {
            t: math.log(1 + (documents - doc_freq.get(t, 1) + 0.5) / (doc_freq.get(t, 1) + 0.5))
            for t in terms
        }
        scores = {}
        for id_, tf in frequencies.items():
            norm = 0.25 + 0.75 * len(tf) / avg_length
            matched = [t for t in terms if t in tf]
            if matched:
                scores[id_] = sum(idf[t] * tf[t] * 2.2 / (tf[t] + 1.2 * norm) for t in matched)
        return scores

    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("set client_min_messages = debug1")
    queries = ["w000 w350", "w001 w002 w120", "w000 w001 w002 w003", "w390 w399 w000 w005"]
    for query in queries:
        for depth in (5, 50):
            scores = bm25(query.split())
            best = sorted(scores, key=lambda i: (-scores[i], str(i)))[:depth]
            # both paths: the postings (no filter) and the documents (a filter every
            # document matches), where MaxScore prunes
            for filter_ in (None, "{}"):
                rows = conn.execute(
                    "select id, score from pgseek.text_candidates(%s, %s, %s)",
                    (query, depth, filter_),
                ).fetchall()
                assert [r[0] for r in rows] == best, (query, filter_)
                assert [r[1] for r in rows] == pytest.approx([scores[i] for i in best], rel=1e-9)
    conn.execute("reset client_min_messages")
    # the first pass did leave terms out (else this test would not test the pruning)
    assert any(
        n.endswith(("1 commonest terms left out", "2 commonest terms left out")) for n in notices
    ), notices


EXPECTED_POSTINGS = """
    select t.lexeme, d.id, coalesce(array_length(t.positions, 1), 1)::smallint,
        length(d.fts), d.tenant
    from pgseek.documents as d, unnest(d.fts) as t
"""


def postings(conn) -> tuple[set, set]:
    """(what pgseek.text_postings holds, what the documents say it should hold)."""
    held = set(
        conn.execute(
            "select term, document_id, tf, doc_length, tenant from pgseek.text_postings"
        ).fetchall()
    )
    return held, set(conn.execute(EXPECTED_POSTINGS).fetchall())


def test_text_postings_follow_every_write(conn):
    """The keyword postings are the documents' tsvectors as rows, through every kind of
    write: COPY, INSERT, content, tenant and id updates, updates that leave the text
    alone, DELETE, TRUNCATE, rolled-back writes; and rebuild_text_postings() agrees."""
    conn.execute("update pgseek.config set embedding_mode = 'off'")
    with conn.cursor().copy("copy pgseek.documents (content) from stdin") as copy:
        for i in range(200):
            copy.write_row((f"alpha beta beta gamma{i % 7} delta{i}",))
    conn.execute(
        "insert into pgseek.documents (content, metadata) values"
        " ('the quick brown fox', '{\"n\": 1}'), ('lazy dogs sleep', '{\"n\": 2}')"
    )
    held, expected = postings(conn)
    assert held == expected and len(held) > 800
    conn.execute(
        "update pgseek.documents set content = content || ' epsilon' where content like '%delta1%'"
    )
    conn.execute(
        "update pgseek.documents set metadata = '{\"x\": 1}' where content like '%gamma3%'"
    )
    conn.execute("update pgseek.documents set tenant = 'acme' where content like '%gamma4%'")
    conn.execute(
        "update pgseek.documents set id = gen_random_uuid() where content = 'lazy dogs sleep'"
    )
    conn.execute("delete from pgseek.documents where content like '%gamma5%'")
    with pytest.raises(errors.CheckViolation), conn.transaction():
        conn.execute("update pgseek.documents set content = 'zeta'")
        conn.execute("update pgseek.documents set content = ' '")
    held, expected = postings(conn)
    assert held == expected
    assert ("epsilon",) in conn.execute("select term from pgseek.text_postings").fetchall()
    conn.execute("delete from pgseek.text_postings where term = 'alpha'")  # damage
    assert conn.execute("select pgseek.rebuild_text_postings()").fetchone()[0] == len(expected)
    assert postings(conn) == (expected, expected)
    conn.execute("truncate pgseek.documents cascade")
    assert postings(conn) == (set(), set())


def test_keyword_search_without_filter_reads_only_the_postings(conn):
    """The unfiltered BM25 branch is an index-only scan of text_postings' primary key:
    it reads no page of pgseek.documents."""
    conn.execute("update pgseek.config set embedding_mode = 'off'")
    conn.execute(
        "insert into pgseek.documents (content) select 'postgres keyword search ' || g"
        " from generate_series(1, 300) as g"
    )
    conn.execute("vacuum analyze pgseek.text_postings")
    conn.execute("select pg_stat_reset()")
    conn.execute("set track_functions = 'all'")
    rows = conn.execute(
        "select count(*) from pgseek.text_candidates('keyword searches', 100)"
    ).fetchone()[0]
    assert rows == 100
    conn.execute("select pg_stat_force_next_flush()")
    scans = dict(
        conn.execute(
            "select relname, coalesce(idx_scan, 0) + coalesce(seq_scan, 0)"
            " from pg_stat_user_tables where schemaname = 'pgseek'"
            " and relname in ('documents', 'text_postings')"
        ).fetchall()
    )
    assert scans["text_postings"] >= 1
    assert scans["documents"] == 0, scans
