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


def test_unknown_sections_are_refused():
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), "--only", "nope"],
        env={**os.environ, "DATABASE_URL": "postgresql://localhost/x"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "bench: unknown section nope: choose from" in result.stderr
