"""pgseek's migration command: Alembic with pgseek's conventions (see migrations/env.py).

Usage (the Makefile targets call these; DATABASE_URL names the database):
    migrate.py upgrade [TARGET]      to head, or to TARGET
    migrate.py downgrade [TARGET]    one step, or to TARGET (a revision or 'base')
    migrate.py status                applied revision, head, pending revisions
    migrate.py sql [RANGE]           print the SQL of RANGE (default base:head), no database
    migrate.py vector-index          build the vector index pgseek.config asks for
    migrate.py freeze [--check]      record released revisions in frozen.txt / verify them
                                     (and that no-transaction sections are safe to re-run)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
sys.path.insert(0, str(MIGRATIONS))

import checksums  # noqa: E402
import sqlfile  # noqa: E402


def alembic_config() -> Config:
    return Config(str(MIGRATIONS / "alembic.ini"))


def connect():
    import psycopg

    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("migrate: DATABASE_URL is not set: run 'make db-up' or set DATABASE_URL")
    try:
        return psycopg.connect(url, autocommit=True, application_name="pgseek-migrate")
    except psycopg.OperationalError as e:
        # The server's own words (refused, password, no such database), without a traceback.
        sys.exit(
            f"migrate: cannot connect to DATABASE_URL: {str(e).strip()}\n"
            "(the embedded cluster: 'make db-up'; 'make db-status' says where it runs)"
        )


def status() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    with connect() as conn:
        exists = conn.execute("select to_regclass('pgseek_meta.alembic_version')").fetchone()[0]
        current = (
            [r[0] for r in conn.execute("select version_num from pgseek_meta.alembic_version")]
            if exists
            else []
        )
        applied = (
            dict(conn.execute("select file, checksum from pgseek_meta.repeatable_objects"))
            if conn.execute("select to_regclass('pgseek_meta.repeatable_objects')").fetchone()[0]
            else {}
        )
        last = (
            conn.execute("select max(applied_at) from pgseek_meta.repeatable_objects").fetchone()[0]
            if applied
            else None
        )
    heads = script.get_heads()
    print(f"database revision: {', '.join(current) or 'base (nothing applied)'}")
    print(f"code head:         {', '.join(heads)}")
    pending = [
        rev.revision
        for rev in script.iterate_revisions(heads[0], current[0] if current else "base")
        if rev.revision not in current
    ]
    print(f"pending:           {', '.join(reversed(pending)) or 'none'}")
    print(f"sql/ objects:      {len(applied)} files applied, last at {last}")
    wanted = {f.name: checksums.file_checksum(f) for f in checksums.repeatable_files()}
    if current and set(current) == set(heads) and applied != wanted:
        differ = sorted(
            n for n in wanted.keys() | applied.keys() if wanted.get(n) != applied.get(n)
        )
        print(
            f"sql/ objects:      WARNING: at head, but {len(differ)} of sql/'s {len(wanted)} files"
            " are not applied as they are on disk (functions, views, triggers, grants or jobs"
            " may be missing or old): run 'make migrate'"
        )
    if checksums.frozen_mismatches():
        print("frozen.txt:        MISMATCH: " + "; ".join(checksums.frozen_mismatches()))


def vector_index() -> None:
    """Run pgseek.vector_index_ddl()'s statements, one by one, outside any transaction."""
    with connect() as conn:
        # a database's or role's statement_timeout would cancel the build, every time
        conn.execute("set statement_timeout = 0")
        if not conn.execute(
            "select pg_try_advisory_lock(hashtextextended('pgseek.migrate', 0))"
        ).fetchone()[0]:
            sys.exit("migrate: a migration is running; run 'make vector-index' after it")
        statements = [r[0] for r in conn.execute("select pgseek.vector_index_ddl()")]
        if not statements:
            print("vector-index: the vector index already matches pgseek.config", file=sys.stderr)
        for statement in statements:
            print(f"vector-index: {statement}", file=sys.stderr)
            conn.execute(statement)


def freeze(check: bool) -> None:
    problems = checksums.frozen_mismatches()
    if problems:
        sys.exit("migrate: released migrations changed:\n  " + "\n  ".join(problems))
    unsafe = [
        p for f in sorted(checksums.VERSIONS.glob("*.sql")) for p in sqlfile.check_sections(f)
    ]
    if unsafe:
        sys.exit("migrate: no-transaction sections (see sqlfile.py):\n  " + "\n  ".join(unsafe))
    if check:
        unfrozen = [
            p.name for p in checksums.revision_modules() if p.name not in checksums.read_frozen()
        ]
        if unfrozen:
            print(f"migrate: not yet frozen (unreleased): {', '.join(unfrozen)}", file=sys.stderr)
        return
    added = checksums.freeze()
    print(f"migrate: froze {', '.join(added) or 'nothing new'}", file=sys.stderr)


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        sys.exit(__doc__)
    verb, args = argv[0], argv[1:]
    target = args[0] if args and args[0] else None
    if verb in ("upgrade", "downgrade"):
        connect().close()  # a clear error now rather than Alembic's traceback later
        try:
            if verb == "upgrade":
                command.upgrade(alembic_config(), target or "head")
            else:
                command.downgrade(alembic_config(), target or "-1")
        except CommandError as e:  # an unknown revision, a relative step past base...
            sys.exit(f"migrate: {e}")
    elif verb == "status":
        status()
    elif verb == "sql":
        command.upgrade(alembic_config(), target or "base:head", sql=True)
    elif verb == "vector-index":
        vector_index()
    elif verb == "freeze":
        freeze(check="--check" in args)
    else:
        sys.exit(f"migrate: unknown command {verb!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
