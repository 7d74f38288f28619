"""`make bench QUICK=1`, the smoke run CI executes: every section runs end to end on the
test cluster and writes its report, figures and results (their figures are not
checked here: timings belong to the benchmark report, not to tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


@pytest.mark.slow
def test_the_quick_benchmark_writes_every_section(server, tmp_path):
    if not server.owned:
        pytest.skip("creates and drops pgseek_bench* databases: only on the session's cluster")
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), "--quick", "--out", str(tmp_path)],
        env={**os.environ, "DATABASE_URL": server.url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sys.path.insert(0, str(SCRIPTS))
    from bench import available_sections

    sections = available_sections()
    results = json.loads((tmp_path / "results.json").read_text())
    report = (tmp_path / "report.md").read_text()
    assert results["quick"] is True and results["sections"] == sections
    assert "make bench QUICK=1" in report
    for name in sections:
        assert results["seconds"][name] > 0
    for image in (line.split("](")[1].rstrip(")") for line in report.splitlines() if "![" in line):
        assert (tmp_path / image).stat().st_size > 10_000, image
    assert results["retention"]["deleted"] == results["retention"]["expired"]
    assert results["retention"]["remaining"] == results["retention"]["live"]
    assert results["ingest"]["copy_vectors_rows_per_second"]["p50"] > 0
    check_indexes(results["indexes"])
    check_search(results["search"])
    check_quality(results["quality"])
    check_scale(results["scale"])
    assert report.count("<details>") >= 3  # EXPLAIN ANALYZE and nested plans, collapsed


def check_indexes(r: dict) -> None:
    """Every index was searched at every setting with the plan it was meant to use, the
    exact scan is the ground truth, and the synthetic vectors were checked against the
    real ones."""
    assert [s["rows"] for s in r["sizes"]] == [2_000, 5_000]
    for size in r["sizes"]:
        assert size["exact"]["recall"] == 1 and size["exact"]["plan"].endswith("Seq Scan")
        methods = [i["method"] for i in size["indexes"]]
        assert methods.count("ivfflat") == 2 and methods[-1] == "hnsw"
        for index in size["indexes"]:
            assert index["build_seconds"] > 0 and index["size_mb"] > 0
            assert all(p["plan_ok"] for p in index["points"]), index["points"]
            assert all(0 <= p["recall"] <= 1 for p in index["points"])
            assert "Index Scan using" in index["explain"]["text"]
        default = size["indexes"][-1]["points"]
        assert max(p["recall"] for p in default) >= 0.9  # a working index, whatever the speed
    assert 0 <= r["distribution"]["nn_ks"] < 0.5


def check_search(r: dict) -> None:
    """The function overhead figures exist for every method, and pgseek's functions kept
    the filtering guarantee (10 rows whenever 10 match) at every selectivity."""
    o = r["overhead"]
    for name in (
        "raw_ef100",
        "search_similar",
        "hybrid_vector",
        "hybrid_text_uncached",
        "supabase_rrf",
        "correct_rrf",
    ):
        assert o[name]["ms"]["p50"] > 0 and o[name]["rows_min"] == 10, name
    assert {f["function"] for f in o["functions_vector"]} >= {"hybrid_search", "text_candidates"}
    assert "embed" in {f["function"] for f in o["functions_text_uncached"]}
    assert "Index Scan using" in o["plans_vector"]
    assert [f["share"] for f in r["filtered"]] == [0.5, 0.1, 0.01, 0.001]
    for f in r["filtered"]:
        expected = min(10, f["matching"])
        assert f["exact"]["rows_min"] == expected
        assert f["search_similar"]["rows_min"] == expected, f
        assert f["hybrid_search"]["rows_min"] == expected, f
        assert f["search_similar"]["recall"] >= 0.9, f


def check_quality(r: dict) -> None:
    if "skipped" in r:  # no BEIR corpus on this machine
        return
    assert {"pgseek default", "pgseek vector", "recipe vector", "recipe rrf"} <= set(r["methods"])
    for scores in r["methods"].values():
        assert 0 <= scores["ndcg@10"] <= 1 and 0 <= scores["recall@100"] <= 1


def check_scale(r: dict) -> None:
    rows = [s["rows"] for s in r["sizes"]]
    assert rows == [2_000, 5_000, 20_000]
    assert "hnsw" in r["sizes"][0] and "hnsw" not in r["sizes"][-1]  # as 1M in a full run
    for size in r["sizes"]:
        assert size["exact"]["recall"] == 1
        assert size["ivfflat"]["size_mb"] > 0
        assert size["table_mb"] > 0


def test_unknown_sections_are_refused():
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), "--only", "nope"],
        env={**os.environ, "DATABASE_URL": "postgresql://localhost/x"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "bench: unknown section nope: choose from" in result.stderr
