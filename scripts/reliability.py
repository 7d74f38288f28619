"""pgseek's reliability suite: `make reliability` (QUICK=1 for the default example counts).
Runs the bad-input, injection, fault and migration-fault tests against a real cluster
and writes RELIABILITY.md from what they recorded; no figure is typed by hand.

  bad input   tests/test_properties.py: hypothesis over every public function's
              arguments (the thorough profile: ten times the examples of `make test`)
  injection   tests/test_injection.py: payloads through every text and JSONB argument
  faults      tests/test_faults.py (provider, worker, purge) and the fault tests of
              tests/test_embeddings.py and tests/test_migrations.py
  load        tests/test_load.py (scripts/load.py): a mixed pgbench workload, direct and
              through PgBouncer, 60 s each with 8 reader clients, then a lost-rows check

Usage: reliability.py [--quick] [--out RELIABILITY.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".build" / "reliability"

# (scenario, pytest selection): the selection is what `make reliability` runs.
SCENARIOS = [
    ("Bad input (property-based)", ["tests/test_properties.py"]),
    ("Injection", ["tests/test_injection.py"]),
    ("Provider, worker and purge faults", ["tests/test_faults.py"]),
    (
        "Single-batch provider failures, killed worker, SKIP LOCKED",
        [
            "tests/test_embeddings.py",
            "-k",
            "rate_limit or failures_end or wrong_dimensions or retries_then or killed"
            " or two_workers or writers_do_not_wait or query_embedding_errors",
        ],
    ),
    ("Mixed load", ["tests/test_load.py"]),
    (
        "Migration faults",
        [
            "tests/test_migrations.py",
            "-k",
            "concurrent or second_migrator or failing_revision or downgrade_keeps",
        ],
    ),
]

NOT_COVERED = [
    "**Load at scale.** The mixed load runs on a few thousand documents for a minute per "
    "route on the machine that runs it; hours-long soak runs and large corpora under "
    "load are not part of the suite (`bench/report.md` has latencies at 100K and 1M).",
    "**A full disk** is out of scope: PostgreSQL stops writing (and may shut down) on "
    "ENOSPC; pgseek adds nothing to that behaviour and does not test it.",
    "**Memory exhaustion** (a backend killed by the OOM killer) is not injected; the "
    "local model costs about 230 MB per backend that embeds (`bench/report.md`).",
    "**Network partitions between primary and replica, and PgBouncer faults** are not "
    "injected here.",
]


def run_pytest(name: str, selection: list[str], env: dict[str, str]) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    junit = BUILD / f"{slug}.xml"
    command = [
        str(ROOT / ".venv" / "bin" / "pytest"),
        *selection,
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "-W",
        "ignore::hypothesis.errors.HypothesisWarning",
    ]
    print(f"reliability: {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=ROOT, env=env, check=False)
    return junit


def read_junit(path: Path) -> list[dict]:
    if not path.exists():
        return [{"name": "(no results: pytest did not run)", "outcome": "error", "seconds": 0}]
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped: " + (child.get("message") or "")[:80]
        cases.append(
            {"name": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0))}
        )
    return cases


def server_version() -> str:
    major = os.environ.get("PGSEEK_PG_MAJOR", "15")
    binary = Path(f"/usr/lib/postgresql/{major}/bin/postgres")
    if not binary.exists():
        return f"PostgreSQL {major}"
    return subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()


def injection_payloads() -> tuple[int, int, int]:
    """(text payloads, JSON payloads, calls) of tests/test_injection.py."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_injection as t

    return len(t.PAYLOADS), len(t.JSON_PAYLOADS), len(t.TEXT_CALLS) + len(t.JSON_CALLS)


def load_runs() -> list[dict]:
    """The figures tests/test_load.py wrote, direct first."""
    runs = []
    for via in ("direct", "pgbouncer"):
        path = BUILD / f"load_{via}.json"
        if path.exists():
            runs.append(json.loads(path.read_text()))
    return runs


def load_figures(run: dict) -> str:
    if "pgbench" not in run:
        return f"{run['via']}: skipped ({run.get('skipped')})"
    transactions = sum(
        op["count"] for group in run["pgbench"].values() for op in group["operations"].values()
    )
    lost = sum(run["checks"]["lost"].values())
    return f"{run['via']}: {transactions} transactions, {run['errors']} errors, {lost} rows lost"


def fmt_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{state} x{n}" for state, n in errors.items()) or "-"


def write_report(out: Path, quick: bool, results: list[tuple[str, list[dict]]]) -> bool:
    properties = json.loads((BUILD / "properties.json").read_text())
    text_payloads, json_payloads, calls = injection_payloads()
    all_cases = [c for _, cases in results for c in cases]
    failed = [c for c in all_cases if c["outcome"] == "failed" or c["outcome"] == "error"]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# pgseek reliability",
        "",
        f"Generated by `make reliability{' QUICK=1' if quick else ''}` on {now} "
        f"(`scripts/reliability.py`; every figure below comes from that run). Machine: "
        f"{os.cpu_count()} cores, {platform.platform()}. Server: {server_version()}, "
        "pgvector 0.8, pg_cron 1.4, a cluster of the run's own. "
        f"Result: **{len(all_cases) - len(failed)} of {len(all_cases)} tests passed**"
        + (f", {len(failed)} failed: " + ", ".join(c["name"] for c in failed) if failed else "")
        + ".",
        "",
        "| scenario | how to run | last figures |",
        "|---|---|---|",
    ]
    for (name, selection), (_, cases) in zip(SCENARIOS, results, strict=True):
        passed = sum(c["outcome"] == "passed" for c in cases)
        seconds = sum(c["seconds"] for c in cases)
        figures = f"{passed}/{len(cases)} tests passed in {seconds:.0f} s"
        if name.startswith("Bad input"):
            figures += (
                f"; {properties['cases']} calls ({properties['profile']} profile), "
                "0 internal errors, crashes or hangs"
                if not failed
                else f"; {properties['cases']} calls"
            )
        if name == "Mixed load":
            figures += "".join(f"; {load_figures(r)}" for r in load_runs())
        if name == "Injection":
            figures += f"; {text_payloads} text and {json_payloads} JSON payloads x {calls} calls"
        run = " ".join(s if " " not in s else f'"{s}"' for s in selection)
        lines.append(f"| {name} | `.venv/bin/pytest {run}` | {figures} |")
    lines += [
        "",
        "`make reliability` runs them all (the thorough hypothesis profile, "
        "`PGSEEK_HYPOTHESIS_PROFILE=thorough`); `make test` runs the same files with the "
        "default profile.",
        "",
        "## Bad input",
        "",
        "Every call either returned a well-shaped answer (columns and types, ordering, at "
        "most k rows, ranks, scores in their documented ranges, filters honoured) or raised "
        "an error whose SQLSTATE is on that function's allow-list: 22023 "
        "(invalid_parameter_value, pgseek's own checks naming the argument), and the "
        "errors of casting the caller's value to the argument's type (22P02, 22003, "
        "22007/22008/22015 for intervals, 22P05 for `\\u0000` in JSON, 42602/42704/3F000 for a "
        "text search configuration, 22000/54000 from pgvector for NaN, infinity or over "
        "16,000 dimensions). After every call the test checks that the connection is alive "
        "and that `pg_postmaster_start_time()` has not changed (no backend crashed); every "
        "statement runs under `statement_timeout = 30s`.",
        "",
        f"{properties['cases']} calls in {properties['seconds']} s:",
        "",
        "| function | calls | answered | refused (SQLSTATE x calls) |",
        "|---|---|---|---|",
    ]
    for function, stats in properties["functions"].items():
        lines.append(
            f"| `{function}` | {stats['cases']} | {stats['ok']} | {fmt_errors(stats['errors'])} |"
        )
    lines += [
        "",
        "Inputs: text (any Unicode but NUL and lone surrogates, control and zero-width "
        "characters, SQL and tsquery syntax, `%I`-style format specifiers, stop words "
        "only, strings up to 200 KB), JSONB (nested objects and arrays, scalars, wrong "
        "types, objects with up to 5,000 keys, `\\u0000`), vectors (wrong dimensions, "
        "NaN, infinity, zero, norms from 1e-45 to 3e38, malformed text, 16,001 "
        "dimensions), integers beyond int4, NULL for every argument, NaN and infinite "
        "weights, unknown modes, metrics and text search configurations. A metamorphic "
        "property checks that cosine search does not depend on the query's norm.",
        "",
        "## Injection",
        "",
        f"{text_payloads} text payloads (quote breaking, stacked statements, `pg_sleep`, "
        "dollar quotes, `%I`/`%L`/`%s` format specifiers, identifier quoting, tsquery "
        "operators, CR/LF) through every text argument of the public functions, and "
        f"{json_payloads} JSON payloads through every JSONB argument: a canary table and "
        "every pgseek table stay as they were, no call takes as long as a smuggled "
        "`pg_sleep`, no call fails with a syntax error (which would mean the payload "
        "became SQL), and stored payloads (sources, chunks, retention policies, API keys) "
        "read back byte for byte. The dynamic SQL paths (`vector_index_ddl()`, "
        "`finish_model_change()`, `vector_search_plan()`) take only integers and config "
        "values that check constraints limit to known words, and quote names with `%I`; "
        "job names are compared as values in pg_cron's database; the model name reaches "
        "the provider as a JSON string and an API key holding CR/LF is refused before "
        "any request.",
        "",
        "## Faults",
        "",
        "Each test injects the fault for real and then checks that nothing was lost: "
        "every inserted row is embedded (with its own text's vector), queued, or "
        "dead-lettered with a reason; a completed purge leaves no expired row and takes "
        "no live one.",
        "",
        "| test | result | seconds |",
        "|---|---|---|",
    ]
    for name, cases in results:
        if name in ("Bad input (property-based)", "Injection"):
            continue
        for case in cases:
            lines.append(f"| `{case['name']}` | {case['outcome']} | {case['seconds']:.1f} |")
    lines += ["", "## Load", ""]
    sys.path.insert(0, str(ROOT / "scripts"))
    import load

    lines += [
        "Readers (`search_similar`, a fifth of them filtered; `hybrid_search` with a given "
        "vector; `hybrid_search` embedding its query in the database), writers (inserts, "
        "a fifth already past retention, through the embedding queue; updates that "
        "re-queue; deletes; rate-limited so the model keeps up), one queue worker "
        "(`process_embedding_queue()`, what the pg_cron job runs) and "
        "`call pgseek.purge_expired()` every few seconds, all at once, driven by pgbench "
        "with custom scripts (`scripts/load.py`). The writers record each change in a "
        "ledger in the same transaction; afterwards the queue is drained, a last purge "
        "runs, and the ledger is checked against the table. Latencies are per "
        "transaction, server time (pgbench's rate-limiter wait taken out).",
        "",
    ]
    for run in load_runs():
        lines += [*load.summary(run), ""]
    lines += [
        "",
        "An interrupted purge leaves its `pgseek.purge_log` row `running` (the backend "
        "died before it could write an outcome) until the next purge, which marks it "
        "`interrupted` (its backend is gone) and finishes the work; "
        "`pgseek_purge_last_run_failed` and `pgseek_purge_failed_runs_logged` count it.",
        "",
        "## Not covered",
        "",
        *[f"- {item}" for item in NOT_COVERED],
        "",
    ]
    out.write_text("\n".join(lines))
    return not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the default hypothesis profile")
    parser.add_argument("--out", type=Path, default=ROOT / "RELIABILITY.md")
    args = parser.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PGSEEK_HYPOTHESIS_PROFILE": "default" if args.quick else "thorough",
        "PGSEEK_RELIABILITY_DIR": str(BUILD),
        "PGSEEK_LOAD_SECONDS": "12" if args.quick else "60",
        "PGSEEK_LOAD_CLIENTS": "3" if args.quick else "8",
    }
    for stale in BUILD.glob("load_*.json"):
        stale.unlink()
    results = [(name, read_junit(run_pytest(name, sel, env))) for name, sel in SCENARIOS]
    ok = write_report(args.out, args.quick, results)
    print(f"reliability: wrote {args.out.relative_to(ROOT)}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
