"""A short mixed load (scripts/load.py): concurrent searches, writes through the
embedding queue, a queue worker and purges, driven by pgbench, directly and through a
real PgBouncer in transaction pooling mode; then nothing may be lost and no client may
have failed. `make reliability` runs the long version (PGSEEK_LOAD_SECONDS,
PGSEEK_LOAD_CLIENTS) and reports the figures it writes to PGSEEK_RELIABILITY_DIR."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pgtest import ROOT, as_url

sys.path.insert(0, str(ROOT / "scripts"))
import load  # scripts/load.py

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("via", ["direct", "pgbouncer"])
def test_mixed_load_loses_nothing(server, via):
    if via == "pgbouncer":
        reason = load.pgbouncer.unavailable()
        if reason:
            pytest.skip(reason)
    name = f"pgseek_test_load_{via}"
    try:
        result = load.run(
            as_url(server.url),
            via,
            seconds=int(os.environ.get("PGSEEK_LOAD_SECONDS", "12")),
            clients=int(os.environ.get("PGSEEK_LOAD_CLIENTS", "3")),
            writer_rate=5,
            dbname=name,
        )
    finally:
        server.drop_database(name)
    print("\n".join(load.summary(result)))
    if os.environ.get("PGSEEK_RELIABILITY_DIR"):
        out = Path(os.environ["PGSEEK_RELIABILITY_DIR"]) / f"load_{via}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
    assert result["errors"] == 0, result["pgbench"]
    assert result["checks"]["lost"] == dict.fromkeys(result["checks"]["lost"], 0)
    operations = {
        name: op
        for group in ("readers", "writers", "worker")
        for name, op in result["pgbench"][group]["operations"].items()
    }
    # every kind of operation ran, and the writes reached the database and the model
    assert all(op["count"] > 0 for op in operations.values()), operations
    checks = result["checks"]
    assert checks["inserted"] > 0 and checks["updated"] > 0 and checks["deleted"] > 0
    assert checks["states_of_inserted_rows"].get("embedded", 0) == (
        checks["inserted"] - checks["inserted_expired"]
    )
    assert result["purge"]["rows"] >= load.SEED_EXPIRED + checks["inserted_expired"]


def test_a_failing_script_counts_as_an_error(server):
    """A client whose statement fails aborts (pgbench 15 writes "client 0 script 0
    aborted in command 0 ..."): the run must count it, not report 0 operations and 0
    errors (how a broken search once passed this load)."""
    bench = load.Bench(
        "broken",
        {"broken": "select 1 / 0;\n"},
        {},
        clients=2,
        target=load.Target.of(as_url(server.url)),
        seconds=2,
    )
    bench.start()
    result = bench.finish(timeout=30)
    assert result["aborted_clients"] == 2, result
    assert "division by zero" in result["abort_messages"][0]
    assert result["operations"]["broken"]["count"] == 0
