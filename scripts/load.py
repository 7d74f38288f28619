"""pgseek under a mixed load, then a check that nothing was lost.

Clients run, concurrently and for a bounded time, through pgbench with custom scripts:
  readers   search_similar (a fifth with a metadata filter), hybrid_search with a given
            vector, hybrid_search embedding its query text in the database
  writers   inserts (a fifth already past their retention period) that flow through the
            embedding queue, updates (which re-queue the row), deletes; rate-limited so
            the model can keep up
  worker    pgseek.process_embedding_queue() in a loop: what the pg_cron job runs
  purge     call pgseek.purge_expired() every few seconds, beside everything else
Readers and writers connect directly or through PgBouncer in transaction pooling mode
(tests/pgbouncer.py starts a real one); the worker and the purge, server-side jobs in
production, connect directly. Afterwards the queue is drained, a last purge runs, and
the ledger the writers kept in the same transactions as their changes is checked:
every inserted row that has not expired is present and embedded, queued or
dead-lettered with a reason; no row past its retention period survives; no live row is
missing; every row deleted is gone; the keyword postings are exactly the documents'
lexemes. Errors (aborted pgbench clients, failed
transactions) are counted; the target is zero.

The database, pgseek_load on DATABASE_URL's server, is created afresh each run: seed
documents with random unit vectors (so no model time is spent on them), expired seed
documents under a 30-day policy, and a table of query texts and vectors.

Usage: load.py [--seconds N] [--clients N] [--via direct,pgbouncer] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from benchdb import connect, create_database, machine
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import pgbouncer  # noqa: E402 (tests/pgbouncer.py: a real PgBouncer of the run's own)

LOAD_DB = "pgseek_load"
DIMS = 384
SEED_LIVE = 2000  # documents with metadata {"seed": n}, which updates and deletes target
SEED_EXPIRED = 2000  # documents 40 days old under the policy {"expire": true} keep 30 days
QUERIES = 500
WORDS = (  # the vocabulary of query and seed texts
    "postgres vector index search retention queue embedding replica backup vacuum planner "
    "tuple page buffer checkpoint lock transaction snapshot cursor trigger function schema "
    "role grant policy tenant partition shard cluster standby archive latency throughput "
    "memory cache disk network client pooler session"
)

READER_SCRIPTS = {
    "search_similar": """\
\\set i random(1, {queries})
select count(*) from pgseek.search_similar(
    (select v from load.queries where i = :i), 10,
    filter => case when :i % 5 = 0 then '{{"topic": "t1"}}'::jsonb end);
""",
    "hybrid_search": """\
\\set i random(1, {queries})
select count(*) from pgseek.hybrid_search(
    (select t from load.queries where i = :i), (select v from load.queries where i = :i), 10);
""",
    "hybrid_search_embed": """\
\\set i random(1, {queries})
select count(*) from pgseek.hybrid_search((select t from load.queries where i = :i), k => 10);
""",
}
READER_WEIGHTS = {"search_similar": 45, "hybrid_search": 45, "hybrid_search_embed": 10}

WRITER_SCRIPTS = {
    "insert": """\
\\set n random(1, 1000000000)
\\set old random(0, 4)
with added as (
    insert into pgseek.documents (content, metadata, created_at)
    values (
        'load document ' || :n || ' on '
            || (select t from load.queries where i = :n % {queries} + 1),
        jsonb_strip_nulls(
            jsonb_build_object('load', :n, 'expire', case when :old = 0 then true end)),
        case when :old = 0 then now() - interval '40 days' else now() end)
    returning id, metadata ? 'expire' as expired
)
insert into load.ledger (id, op, expired) select id, 'insert', expired from added;
""",
    "update": """\
\\set s random(1, {seed})
with changed as (
    update pgseek.documents set content = content || ' (revised)'
    where metadata @> jsonb_build_object('seed', :s)
    returning id
)
insert into load.ledger (id, op) select id, 'update' from changed;
""",
    "delete": """\
\\set s random(1, {seed})
with removed as (
    delete from pgseek.documents where metadata @> jsonb_build_object('seed', :s)
    returning id
)
insert into load.ledger (id, op) select id, 'delete' from removed;
""",
}
WRITER_WEIGHTS = {"insert": 60, "update": 25, "delete": 15}

WORKER_SCRIPT = """\
select pgseek.process_embedding_queue(16) as embedded \\gset
\\if :embedded = 0
\\sleep 200 ms
\\endif
"""


def log(message: str) -> None:
    print(f"load: {message}", file=sys.stderr, flush=True)


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    for major in (17, 16, 15, 14):
        candidate = Path(f"/usr/lib/postgresql/{major}/bin/pgbench")
        if candidate.exists():
            return str(candidate)
    raise SystemExit("load: pgbench not found (it comes with the postgresql-N package)")


def unit_vectors(rng: np.random.Generator, rows: int) -> np.ndarray:
    v = rng.normal(size=(rows, DIMS)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def vector_text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


def prepare(server_url: str, dbname: str) -> str:
    """Creates the database afresh, migrated and seeded; returns its URL."""
    url = create_database(server_url, dbname)  # dropped first when it exists; migrated
    rng = np.random.default_rng(42)
    words = np.array(WORDS.split())
    with connect(url) as conn:
        conn.execute("create schema load")
        conn.execute(
            "create table load.queries (i integer primary key, t text not null, v vector not null)"
        )
        conn.execute(
            "create table load.ledger (id uuid not null, op text not null,"
            " expired boolean not null default false, at timestamptz not null"
            " default clock_timestamp())"
        )
        with conn.cursor().copy("copy load.queries (i, t, v) from stdin") as copy:
            for i, v in enumerate(unit_vectors(rng, QUERIES), start=1):
                copy.write_row((i, " ".join(rng.choice(words, 3)), vector_text(v)))
        with conn.cursor().copy(
            "copy pgseek.documents (content, metadata, embedding) from stdin"
        ) as copy:
            vectors = unit_vectors(rng, SEED_LIVE + SEED_EXPIRED)
            for n in range(1, SEED_LIVE + SEED_EXPIRED + 1):
                live = n <= SEED_LIVE
                metadata = (
                    {"seed": n, "topic": f"t{n % 10}"} if live else {"old": n, "expire": True}
                )
                copy.write_row(
                    (
                        f"seed document {n}: " + " ".join(rng.choice(words, 12)),
                        json.dumps(metadata),
                        vector_text(vectors[n - 1]),
                    )
                )
        conn.execute(
            "update pgseek.documents set created_at = now() - interval '40 days'"
            " where metadata ? 'old'"
        )
        conn.execute("select pgseek.set_retention('{\"expire\": true}', '30 days')")
        for (statement,) in conn.execute("select pgseek.vector_index_ddl()").fetchall():
            conn.execute(statement)
        conn.execute("select pgseek.refresh_text_stats()")
        conn.execute("vacuum (analyze) pgseek.documents")
        # the model loads in the backends that embed; warm the query cache for nothing
        conn.execute("select pgseek.embed('warm up')")
    return url


@dataclass
class Target:
    """Where pgbench connects: host, port, user, password, database."""

    host: str
    port: str
    user: str
    password: str
    dbname: str

    @classmethod
    def of(cls, url: str) -> Target:
        p = conninfo_to_dict(url)
        return cls(
            p.get("host", "127.0.0.1"),
            str(p.get("port", 5432)),
            p.get("user", "postgres"),
            p.get("password", ""),
            p["dbname"],
        )


@dataclass
class Bench:
    """One pgbench process: its scripts, clients and logs."""

    name: str
    scripts: dict[str, str]
    weights: dict[str, int]
    clients: int
    target: Target
    seconds: int
    rate: float | None = None  # transactions per second over all clients, if limited
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pgseek-load-")))
    process: subprocess.Popen | None = None

    def start(self) -> None:
        args = [pgbench_binary(), "--no-vacuum", "--progress=10", "-c", str(self.clients)]
        args += ["-j", str(min(self.clients, 4)), "-l", "--log-prefix", str(self.directory / "log")]
        args += ["-T", str(self.seconds)]
        if self.rate:
            args += ["--rate", f"{self.rate:g}"]
        for name, body in self.scripts.items():
            path = self.directory / f"{name}.sql"
            path.write_text(body.format(queries=QUERIES, seed=SEED_LIVE))
            args += ["-f", f"{path}@{self.weights.get(name, 1)}"]
        t = self.target
        args += ["-h", t.host, "-p", t.port, "-U", t.user, t.dbname]
        env = {**os.environ, "PGPASSWORD": t.password, "PGAPPNAME": f"pgseek-load-{self.name}"}
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def kill(self) -> None:
        """Ends pgbench when the run failed (its buffered logs are lost)."""
        if self.process and self.process.poll() is None:
            self.process.kill()

    def finish(self, timeout: float) -> dict:
        """Waits for pgbench, then reads its summary and per-transaction logs."""
        assert self.process is not None
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
        names = list(self.scripts)
        latencies: dict[str, list[float]] = {n: [] for n in names}
        lag: dict[str, list[float]] = {n: [] for n in names}
        first = last = None
        for path in self.directory.glob("log.*"):
            for line in path.read_text().splitlines():
                fields = line.split()
                # client transaction latency_us script epoch_s epoch_us [lag_us]
                if len(fields) < 6 or fields[2] in ("skipped", "failed"):
                    continue  # a line cut short by the stop signal; not a transaction
                script = names[int(fields[3])]
                latencies[script].append(int(fields[2]) / 1000)
                if len(fields) > 6:
                    lag[script].append(int(fields[6]) / 1000)
                at = int(fields[4]) + int(fields[5]) / 1e6
                first = at if first is None else min(first, at)
                last = at if last is None else max(last, at)
        elapsed = (last - first) if first is not None and last is not None else 0
        # pgbench 15: "client 0 script 1 aborted in command 1 query 0: ERROR: ..."
        aborted = re.findall(r"client \d+ (?:script \d+ )?aborted.*", stderr)
        if self.process.returncode and not aborted:  # failed some other way
            aborted = [f"pgbench exited with {self.process.returncode}: {stderr[-300:]}"]
        failed = re.search(r"number of failed transactions: (\d+)", stdout)
        result = {
            "returncode": self.process.returncode,
            "aborted_clients": len(aborted),
            "abort_messages": aborted[:5],
            "failed_transactions": int(failed.group(1)) if failed else 0,
            "seconds": round(elapsed, 1),
            "operations": {},
        }
        for name in names:
            # pgbench's latency includes the wait for the rate limiter's schedule: the
            # server's time is latency - lag
            served = sorted(
                latency - (lag[name][i] if lag[name] else 0)
                for i, latency in enumerate(latencies[name])
            )
            result["operations"][name] = {
                "count": len(served),
                "per_second": round(len(served) / elapsed, 1) if elapsed else 0,
                **percentiles(served),
            }
        shutil.rmtree(self.directory, ignore_errors=True)
        return result


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99)}


class Purger(threading.Thread):
    """Calls pgseek.purge_expired() every `every` seconds until stopped."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.stopping = threading.Event()
        self.runs: list[dict] = []
        self.errors: list[str] = []

    def run(self) -> None:
        with connect(self.url) as conn:
            while not self.stopping.wait(self.every):
                started = time.perf_counter()
                try:
                    deleted = conn.execute("call pgseek.purge_expired()").fetchone()[0]
                except Exception as e:  # recorded: the run counts it as an error
                    self.errors.append(f"{type(e).__name__}: {e}")
                    continue
                self.runs.append(
                    {"deleted": deleted, "seconds": round(time.perf_counter() - started, 3)}
                )


def drain(url: str, timeout: float) -> tuple[float, int]:
    """Embeds until the queue holds nothing ready; returns (seconds, rows embedded)."""
    started = time.perf_counter()
    total = 0
    with connect(url) as conn:
        while time.perf_counter() - started < timeout:
            done = conn.execute("select pgseek.process_embedding_queue(64)").fetchone()[0]
            total += done
            ready = conn.execute(
                "select count(*) from pgseek.embedding_queue where next_attempt_at <= now()"
            ).fetchone()[0]
            if done == 0 and ready == 0:
                break
    return time.perf_counter() - started, total


def check(url: str) -> dict:
    """The invariants after the run; every count under 'lost' must be 0."""
    with connect(url) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        inserted = one("select count(*) from load.ledger where op = 'insert'")
        inserted_live = one("select count(*) from load.ledger where op = 'insert' and not expired")
        states = dict(
            conn.execute(
                """
                select case
                    when q.document_id is not null then 'queued'
                    when f.document_id is not null then 'dead-lettered'
                    when d.embedding is not null then 'embedded'
                    else 'neither' end,
                    count(*)
                from load.ledger as l
                join pgseek.documents as d on d.id = l.id
                left join (select distinct document_id from pgseek.embedding_queue) as q
                    on q.document_id = d.id
                left join (select distinct document_id from pgseek.embedding_dead_letter) as f
                    on f.document_id = d.id
                where l.op = 'insert'
                group by 1
                """
            ).fetchall()
        )
        reasons = [
            r[0]
            for r in conn.execute(
                "select distinct left(error, 200) from pgseek.embedding_dead_letter"
            )
        ]
        deleted_ids = "select id from load.ledger where op = 'delete'"
        return {
            "inserted": inserted,
            "inserted_expired": inserted - inserted_live,
            "updated": one("select count(distinct id) from load.ledger where op = 'update'"),
            "deleted": one(f"select count(*) from ({deleted_ids}) as x"),
            "states_of_inserted_rows": states,
            "dead_letter_reasons": reasons,
            "purge_log_rows": one("select coalesce(sum(deleted), 0)::bigint from pgseek.purge_log"),
            "lost": {
                "inserted live rows missing": one(
                    "select count(*) from load.ledger as l where l.op = 'insert'"
                    " and not l.expired and not exists"
                    " (select from pgseek.documents as d where d.id = l.id)"
                ),
                "inserted rows neither embedded, queued nor dead-lettered": states.get(
                    "neither", 0
                ),
                "dead letters without a reason": one(
                    "select count(*) from pgseek.embedding_dead_letter"
                    " where coalesce(error, '') !~ '[^[:space:]]'"
                ),
                "live seed rows missing": SEED_LIVE
                - one(f"select count(*) from ({deleted_ids}) as x")
                - one("select count(*) from pgseek.documents where metadata ? 'seed'"),
                "deleted rows still present": one(
                    f"select count(*) from pgseek.documents where id in ({deleted_ids})"
                ),
                "rows past retention still present": one(
                    "select count(*) from pgseek.documents as d, pgseek.retention_policies as p"
                    " where d.metadata @> p.match and d.created_at < now() - p.keep"
                ),
                # the keyword postings, kept by triggers through every concurrent write,
                # against what the documents' tsvectors say (either side's extra rows)
                "keyword postings out of step with their documents": one(
                    "select count(*) from ((select term, document_id, tf, doc_length, tenant"
                    " from pgseek.text_postings except all select t.lexeme, d.id,"
                    " coalesce(array_length(t.positions, 1), 1)::smallint, length(d.fts),"
                    " d.tenant from pgseek.documents as d, unnest(d.fts) as t) union all"
                    " (select t.lexeme, d.id, coalesce(array_length(t.positions, 1), 1)::smallint,"
                    " length(d.fts), d.tenant from pgseek.documents as d, unnest(d.fts) as t"
                    " except all select term, document_id, tf, doc_length, tenant"
                    " from pgseek.text_postings)) as x"
                ),
            },
        }


def run(
    server_url: str,
    via: str,
    seconds: int,
    clients: int,
    writer_rate: float,
    dbname: str = LOAD_DB,
) -> dict:
    """One load run, direct or through PgBouncer, in database dbname (created afresh);
    returns its figures and checks."""
    log(f"{via}: preparing {dbname} ({SEED_LIVE} live + {SEED_EXPIRED} expired documents)")
    url = prepare(server_url, dbname)
    bouncer = None
    target = Target.of(url)
    if via == "pgbouncer":
        reason = pgbouncer.unavailable()
        if reason:
            return {"via": via, "skipped": reason}
        bouncer = pgbouncer.start(server_url, pgbouncer.binary(), pool_size=clients)
        target = Target.of(bouncer.url(dbname))
    direct = Target.of(url)
    readers = Bench("readers", READER_SCRIPTS, READER_WEIGHTS, clients, target, seconds)
    writers = Bench("writers", WRITER_SCRIPTS, WRITER_WEIGHTS, 2, target, seconds, writer_rate)
    worker = Bench("worker", {"embed": WORKER_SCRIPT}, {}, 1, direct, seconds)
    purger = Purger(url, every=max(3.0, seconds / 6))
    log(
        f"{via}: {clients} readers, writers at {writer_rate:g}/s, 1 worker, purge every "
        f"{purger.every:.0f} s, for {seconds} s"
    )
    try:
        for bench in (worker, readers, writers):
            bench.start()
        purger.start()
        results = {b.name: b.finish(timeout=seconds + 120) for b in (readers, writers, worker)}
        purger.stopping.set()
        purger.join(timeout=120)
        log(f"{via}: draining the embedding queue")
        drain_seconds, drained = drain(url, timeout=600)
        with connect(url) as conn:
            final_purge = conn.execute("call pgseek.purge_expired()").fetchone()[0]
        checks = check(url)
    finally:
        for bench in (readers, writers, worker):
            bench.kill()
        purger.stopping.set()
        if bouncer is not None:
            bouncer.stop()
    errors = sum(r["aborted_clients"] + r["failed_transactions"] for r in results.values()) + len(
        purger.errors
    )
    return {
        "via": via,
        "seconds": seconds,
        "clients": clients,
        "writer_rate": writer_rate,
        "pgbench": results,
        "purge": {
            "runs": len(purger.runs) + 1,
            "rows": sum(r["deleted"] for r in purger.runs) + final_purge,
            "during_load": purger.runs,
            "errors": purger.errors,
        },
        "drain": {"seconds": round(drain_seconds, 1), "embedded": drained},
        "errors": errors,
        "checks": checks,
        "ok": errors == 0 and not any(checks["lost"].values()),
    }


def summary(result: dict) -> list[str]:
    """Markdown lines for one run."""
    if "skipped" in result:
        return [f"- {result['via']}: skipped ({result['skipped']})"]
    lines = [
        f"**{result['via']}**: {result['clients']} reader clients and 2 writer clients "
        f"({result['writer_rate']:g} writes/s) for {result['seconds']} s, 1 queue worker, "
        f"{result['purge']['runs']} purges ({result['purge']['rows']} rows). "
        f"Errors: **{result['errors']}**.",
        "",
        "| operation | count | per second | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for group in ("readers", "writers", "worker"):
        for name, op in result["pgbench"][group]["operations"].items():
            lines.append(
                f"| {name} | {op['count']} | {op['per_second']} | {op['p50_ms']} | "
                f"{op['p95_ms']} | {op['p99_ms']} |"
            )
    c = result["checks"]
    lines += [
        "",
        "`embed` is the queue worker's loop: one `process_embedding_queue(16)` call, plus "
        "a 200 ms sleep when it found nothing to embed.",
        "",
        f"Afterwards (queue drained in {result['drain']['seconds']} s): {c['inserted']} rows "
        f"inserted ({c['inserted_expired']} already expired), {c['updated']} updated, "
        f"{c['deleted']} deleted; states of the inserted rows still present: "
        + ", ".join(f"{k} {v}" for k, v in sorted(c["states_of_inserted_rows"].items()))
        + ".",
        "",
        "| invariant | violations |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in c["lost"].items()),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8, help="reader clients")
    parser.add_argument("--writer-rate", type=float, default=5, help="writes per second")
    parser.add_argument("--via", default="direct,pgbouncer")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        raise SystemExit("load: set DATABASE_URL (make -s db-url)")
    results = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": [
            run(server_url, via.strip(), args.seconds, args.clients, args.writer_rate)
            for via in args.via.split(",")
        ],
    }
    for r in results["runs"]:
        print("\n".join(summary(r)) + "\n")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if not all(r.get("ok", True) for r in results["runs"]):
        raise SystemExit("load: errors or lost rows (see above)")


if __name__ == "__main__":
    main()
