"""Alembic environment for pgseek.

What it adds to plain Alembic, in the order a run goes:
1. a session advisory lock, so two migrators never interleave (the second waits up to
   PGSEEK_MIGRATE_LOCK_TIMEOUT seconds, printing who holds the lock, then fails clearly);
2. checksum validation: a revision whose files changed after it was applied to this
   database stops the run (released migrations are append-only);
3. one transaction per revision (statements marked `--! no-transaction` excepted, see
   sqlfile.py), recording each applied revision's checksum in the same transaction; a
   revision that stopped after part of it committed (before a no-transaction section)
   resumes there on the next run, and must be finished before anything else runs;
4. at head, the repeatable objects in sql/ are re-applied, in one transaction, when
   their content changed; they exist only at head, so a downgrade removes them first;
5. when anything was applied where pgseek's pg_cron jobs are, pg_cron is made to read
   its jobs again (pgseek.reload_jobs(): the migration can make it miss job changes).
Bookkeeping lives in schema pgseek_meta, so downgrading to base leaves no pgseek schema.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from logging.config import fileConfig
from pathlib import Path

import psycopg
from alembic import context
from alembic.script import ScriptDirectory
from psycopg import errors
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checksums
import sqlfile

META_SCHEMA = "pgseek_meta"
LOCK_KEY = "pgseek.migrate"
config = context.config
if config.config_file_name and not config.attributes.get("quiet"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The libpq URL (or key=value string) to connect to, as the user gave it."""
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DATABASE_URL")
    if not url:
        sys.exit(
            "migrate: DATABASE_URL is not set and no local cluster is running: "
            "run 'make db-up', or set DATABASE_URL=postgresql://user:password@host:port/db"
        )
    if url.startswith("postgresql+psycopg://"):  # SQLAlchemy's spelling
        return "postgresql://" + url[len("postgresql+psycopg://") :]
    return url


def connect_libpq(url: str):
    """A psycopg connection made by libpq from the URL itself (SQLAlchemy's own URL
    parser rejects what libpq accepts: a percent-encoded socket directory as host,
    several hosts). Without a statement_timeout: a database's or role's default would
    cancel `create index concurrently` (leaving an INVALID index, every retry the same)
    or a long sql/ apply; the transactional revisions set their own limits."""
    conn = psycopg.connect(url, application_name="pgseek-migrate")
    conn.execute("set statement_timeout = 0")
    conn.commit()
    return conn


def acquire_lock(connection: Connection) -> None:
    """Take the migration lock for this session, waiting a bounded time for it."""
    timeout = float(os.environ.get("PGSEEK_MIGRATE_LOCK_TIMEOUT", "300"))
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        got = connection.execute(
            text("select pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": LOCK_KEY}
        ).scalar()
        connection.commit()
        if got:
            return
        holder = connection.execute(
            text(
                "select a.pid, coalesce(nullif(a.application_name, ''), a.usename::text)"
                " from pg_locks l join pg_stat_activity a using (pid)"
                " where l.locktype = 'advisory' and l.granted"
                " and l.objid = (hashtextextended(:key, 0) & 4294967295)::oid limit 1"
            ),
            {"key": LOCK_KEY},
        ).first()
        connection.commit()
        who = f"pid {holder[0]} ({holder[1]})" if holder else "another session"
        if time.monotonic() >= deadline:
            sys.exit(
                f"migrate: another migration is running ({who}) and still holds the lock "
                f"after {timeout:g}s; wait for it to finish, or raise PGSEEK_MIGRATE_LOCK_TIMEOUT"
            )
        if not announced:
            print(f"migrate: waiting for another migration ({who}) to finish", file=sys.stderr)
            announced = True
        time.sleep(0.5)


# pgseek_meta's tables (Alembic creates alembic_version there itself).
META_DDL = [
    f"create schema if not exists {META_SCHEMA}",
    f"create table if not exists {META_SCHEMA}.migration_checksums ("
    " revision text primary key, checksum text not null,"
    " applied_at timestamptz not null default now())",
    f"create table if not exists {META_SCHEMA}.repeatable_objects ("
    " file text primary key, checksum text not null,"
    " applied_at timestamptz not null default now())",
    f"create table if not exists {META_SCHEMA}.revision_progress ("
    " revision_file text not null, direction text not null,"
    " next_section integer not null, recorded_at timestamptz not null default now(),"
    " primary key (revision_file, direction))",
]


def prepare_meta(connection: Connection) -> None:
    for ddl in META_DDL:
        connection.execute(text(ddl))
    connection.commit()


def literal(value: str) -> str:
    """A SQL string literal (for the --sql output)."""
    return "'" + value.replace("'", "''") + "'"


def interrupted_revisions(connection: Connection) -> dict[str, str]:
    """Revisions whose run stopped after part of it committed (see sqlfile.py), as
    {revision file stem: direction}."""
    rows = connection.execute(
        text(f"select revision_file, direction from {META_SCHEMA}.revision_progress")
    ).all()
    connection.commit()
    return dict(rows)


def validate_applied(connection: Connection, script: ScriptDirectory) -> None:
    """Stop when a revision applied here has been edited since."""
    rows = connection.execute(
        text(f"select revision, checksum from {META_SCHEMA}.migration_checksums")
    ).all()
    connection.commit()
    for revision, stored in rows:
        rev = script.get_revision(revision)
        if rev is None:
            continue  # a newer revision than this code knows: Alembic reports it
        current = checksums.revision_checksum(Path(rev.path))
        if current != stored:
            sys.exit(
                f"migrate: revision {revision} ({Path(rev.path).name}) was edited after it "
                f"was applied to this database (checksum {stored[:12]} applied, "
                f"{current[:12]} on disk). Released migrations are append-only: revert the "
                "edit and put the change in a new revision."
            )


def record_step(ctx, step, heads, run_args) -> None:  # noqa: ARG001 (Alembic's signature)
    """on_version_apply hook: keep migration_checksums in step with alembic_version (in
    --sql mode, print the statements that do)."""
    rev = step.up_revision  # for both directions: the revision applied or undone
    if step.is_upgrade:
        checksum = checksums.revision_checksum(Path(rev.path))
        statement = (
            f"insert into {META_SCHEMA}.migration_checksums (revision, checksum)"
            f" values ({literal(rev.revision)}, {literal(checksum)}) on conflict (revision)"
            " do update set checksum = excluded.checksum, applied_at = now()"
        )
    else:
        statement = (
            f"delete from {META_SCHEMA}.migration_checksums"
            f" where revision = {literal(rev.revision)}"
        )
    # the revision is done, in this direction: a record of its sections committed so far
    # goes in the same transaction
    progress = (
        f"delete from {META_SCHEMA}.revision_progress"
        f" where revision_file = {literal(Path(rev.path).stem)}"
    )
    for sql in (statement, progress):
        if ctx.as_sql:
            ctx.impl.static_output(sql + ";\n")
        else:
            ctx.connection.execute(text(sql))


# Routines that columns, indexes, defaults or constraints use belong to migrations.
MIGRATION_OWNED = """exists (
            select from pg_catalog.pg_depend as d
            where d.refclassid = 'pg_proc'::regclass and d.refobjid = p.oid
                and d.classid in ('pg_class'::regclass, 'pg_attrdef'::regclass,
                    'pg_constraint'::regclass)
        )"""


def drop_in_passes(kind: str, query: str) -> str:
    """PL/pgSQL dropping the `kind` objects (view, routine) that query names (as `name`)
    in passes, each dropping what nothing depends on any more, until none is left (a SQL
    body depends on the routines it calls, a view on the views and routines it reads);
    when a pass drops nothing, something else depends on them: the plain drop says what.
    Needs variables r record, progress boolean, remaining integer."""
    return f"""
    loop
        progress := false;
        remaining := 0;
        for r in {query}
        loop
            begin
                execute format('drop {kind} %s', r.name);
                progress := true;
            exception when dependent_objects_still_exist then
                remaining := remaining + 1;
            end;
        end loop;
        exit when remaining = 0;
        if not progress then
            for r in {query}
            loop
                execute format('drop {kind} %s', r.name);
            end loop;
        end if;
    end loop;"""


ALL_ROUTINES = f"""
            select p.oid::regprocedure as name from pg_catalog.pg_proc as p
            where p.pronamespace = 'pgseek'::regnamespace and not {MIGRATION_OWNED}"""

DROP_REPEATABLES_SQL = f"""
do $$
declare
    r record;
    progress boolean;
    remaining integer;
begin
    if to_regnamespace('pgseek') is null then
        return;
    end if;
    for r in
        select c.oid::regclass as name from pg_catalog.pg_class as c
        where c.relnamespace = 'pgseek'::regnamespace and c.relkind in ('v', 'm')
    loop
        execute format('drop view if exists %s cascade', r.name);
    end loop;
    for r in
        select t.tgname, t.tgrelid::regclass as tbl from pg_catalog.pg_trigger as t
        inner join pg_catalog.pg_class as c on t.tgrelid = c.oid
        where c.relnamespace = 'pgseek'::regnamespace and not t.tgisinternal
    loop
        execute format('drop trigger %I on %s', r.tgname, r.tbl);
    end loop;{drop_in_passes("routine", ALL_ROUTINES)}
end
$$
"""


UNSCHEDULE_JOBS_SQL = """
do $$
begin
    if exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
        perform cron.unschedule(j.jobid) from cron.job as j
        where j.jobname like 'pgseek-%' and j.database = current_database();
    end if;
end
$$
"""

# After sql/ is re-applied: views, routines and triggers in schema pgseek that this
# transaction did not (re)create are stale (a signature changed, or a file dropped them),
# except routines that columns, indexes, defaults or constraints use (they belong to
# migrations). Views go first (a stale one may use a stale routine), in passes, so that
# one stale view using another is no obstacle; every `create or replace view` rewrites
# the view's rule, so a rule older than this transaction marks a stale view.
STALE_VIEWS = """
        select c.oid::regclass as name
        from pg_catalog.pg_class as c
        where c.relnamespace = 'pgseek'::regnamespace and c.relkind = 'v'
            and not exists (
                select from pg_catalog.pg_rewrite as w
                where w.ev_class = c.oid and w.xmin = pg_current_xact_id()::xid
            )"""

DROP_STALE_SQL = f"""
do $$
declare
    r record;
    progress boolean;
    remaining integer;
begin{drop_in_passes("view", STALE_VIEWS)}
    for r in
        select t.tgname, t.tgrelid::regclass as tbl from pg_catalog.pg_trigger as t
        inner join pg_catalog.pg_class as c on t.tgrelid = c.oid
        where c.relnamespace = 'pgseek'::regnamespace and not t.tgisinternal
            and t.xmin <> pg_current_xact_id()::xid
    loop
        execute format('drop trigger %I on %s', r.tgname, r.tbl);
    end loop;
    for r in
        select p.oid::regprocedure as name from pg_catalog.pg_proc as p
        where p.pronamespace = 'pgseek'::regnamespace
            and p.xmin <> pg_current_xact_id()::xid and not {MIGRATION_OWNED}
    loop
        execute format('drop routine %s', r.name);
    end loop;
end
$$
"""


def drop_repeatables(connection: Connection) -> None:
    """Before going below head: remove sql/'s objects, which exist only at head (they
    may use what a downgrade drops, and stale triggers would break writes). Runs in the
    transaction of the first downgrade step, so a downgrade that fails (or has nothing
    to do) leaves them in place."""
    driver = connection.connection.driver_connection
    driver.execute(UNSCHEDULE_JOBS_SQL)
    driver.execute(DROP_REPEATABLES_SQL)
    driver.execute(f"delete from {META_SCHEMA}.repeatable_objects")


# What the run is doing, for a one-line error when the database refuses it.
RUNNING: dict[str, str] = {}


def plan_steps(plan, interrupted: dict[str, str], head: set[str], superuser_problem: str | None):
    """Wrap Alembic's step planner: the steps are resolved first (an unknown target fails
    before anything is touched); a revision interrupted after part of it committed must
    be the first step, in the same direction (it then resumes); a run that ends at head
    with sql/ to apply stops, before it starts, when superuser_problem says the role
    cannot; and the first downgrade step drops sql/'s objects in its own transaction
    before it runs."""

    def steps(heads, migration_context):
        planned = list(plan(heads, migration_context))
        for stem, direction in interrupted.items():
            first = planned[0] if planned else None
            if (
                first is None
                or Path(first.revision.path).stem != stem
                or first.is_upgrade != (direction == "upgrade")
            ):
                again = "'make migrate'" if direction == "upgrade" else "the same rollback"
                sys.exit(
                    f"migrate: {stem}'s {direction} stopped after part of it committed;"
                    f" run {again} again to finish it before anything else"
                )
        if superuser_problem:  # ending at head, where sql/ must be applied
            ends = {planned[-1].revision.revision} if planned else set(heads)
            if ends == head and (not planned or planned[-1].is_upgrade):
                sys.exit(superuser_problem)
        if planned and not planned[0].is_upgrade:
            downgrade = planned[0].migration_fn

            @functools.wraps(downgrade)
            def downgrade_without_repeatables(*args, **kwargs) -> None:
                drop_repeatables(migration_context.connection)
                downgrade(*args, **kwargs)

            planned[0].migration_fn = downgrade_without_repeatables
        for step in planned:
            track(step)
        return planned

    return steps


def track(step) -> None:
    """Have a step say which revision runs (RUNNING), for run_online's error message."""
    migrate = step.migration_fn
    direction = "upgrade" if step.is_upgrade else "downgrade"

    @functools.wraps(migrate)
    def tracked(*args, **kwargs) -> None:
        RUNNING["what"] = f"revision {step.revision.revision} ({direction})"
        migrate(*args, **kwargs)

    step.migration_fn = tracked


def run_repeatables(
    connection: Connection, files: list[Path], checksums_by_file: dict[str, str], drop_first: bool
) -> None:
    """Apply sql/ in one transaction: its files in order, then drop what they no longer
    create, then record the files' checksums."""
    driver = connection.connection.driver_connection
    with connection.begin():
        if drop_first:
            driver.execute(DROP_REPEATABLES_SQL)
        for f in files:
            driver.execute(f.read_text())
        driver.execute(DROP_STALE_SQL)
        connection.execute(text(f"delete from {META_SCHEMA}.repeatable_objects"))
        for name, checksum in checksums_by_file.items():
            connection.execute(
                text(
                    f"insert into {META_SCHEMA}.repeatable_objects (file, checksum) values (:f, :c)"
                ),
                {"f": name, "c": checksum},
            )


def apply_repeatables(connection: Connection, at_head: bool) -> bool:
    """At head, re-apply sql/ when its content changed; below head, forget it was applied.
    Returns whether sql/ was applied."""
    if not at_head:
        connection.execute(text(f"delete from {META_SCHEMA}.repeatable_objects"))
        connection.commit()
        return False
    files = checksums.repeatable_files()
    wanted = {f.name: checksums.file_checksum(f) for f in files}
    applied = dict(
        connection.execute(text(f"select file, checksum from {META_SCHEMA}.repeatable_objects"))
        .tuples()
        .all()
    )
    connection.commit()
    if wanted == applied:
        return False
    changed = sorted(name for name in wanted if wanted[name] != applied.get(name))
    try:
        run_repeatables(connection, files, wanted, drop_first=False)
    except (errors.InvalidFunctionDefinition, errors.InvalidTableDefinition):
        # `create or replace` cannot change a function's result type or a view's
        # columns: drop sql/'s objects and create them again, still in one transaction.
        print("migrate: a result type changed; re-creating sql/ objects", file=sys.stderr)
        run_repeatables(connection, files, wanted, drop_first=True)
    print(
        f"migrate: applied sql/ ({len(files)} files; changed: {', '.join(changed) or 'none'})",
        file=sys.stderr,
    )
    return True


def pg_cron_blocks_on_jobs(connection: Connection) -> bool:
    """True when pg_cron's scheduler stops while a job runs: before 1.5, with
    cron.use_background_workers on, it waits for a running job to finish before it reads
    anything else, invalidations included (citusdata/pg_cron#200)."""
    version, workers = connection.execute(
        text(
            "select extversion, coalesce(current_setting('cron.use_background_workers', true),"
            " 'off') from pg_catalog.pg_extension where extname = 'pg_cron'"
        )
    ).one()
    major, minor = (int(n) for n in re.findall(r"\d+", version)[:2])
    return (major, minor) < (1, 5) and workers == "on"


def reload_pg_cron_jobs(connection: Connection) -> None:
    """After a migration that changed something: its burst of catalog changes can reset
    pg_cron's scheduler, which then misses the job changes of the same moment (see
    pgseek.reload_jobs()). Wait until the scheduler has come to its reset (it looks every
    second, or once a running job is done where it waits for jobs), then have it read its
    job list again."""
    ready = connection.execute(
        text(
            "select to_regprocedure('pgseek.reload_jobs()') is not null"
            " and exists (select from pg_catalog.pg_extension where extname = 'pg_cron')"
            " and not pg_catalog.pg_is_in_recovery()"
        )
    ).scalar()
    if ready:  # (cron.* can be named only where pg_cron is)
        ready = connection.execute(
            text("select exists (select from cron.job where jobname like 'pgseek-%')")
        ).scalar()
    blocking = ready and pg_cron_blocks_on_jobs(connection)
    connection.commit()
    if not ready:
        return
    time.sleep(2)
    deadline = time.monotonic() + 70  # the embedding worker runs for up to 50 s
    waited = False
    while blocking:
        running = connection.execute(
            text("select count(*) from pg_catalog.pg_stat_activity where backend_type = 'pg_cron'")
        ).scalar()
        connection.commit()
        if not running:
            break
        if time.monotonic() > deadline:
            print(
                "migrate: WARNING: pg_cron kept running jobs for 70 s; if a pgseek job does"
                " not run at its time, run: select pgseek.reload_jobs()",
                file=sys.stderr,
            )
            return
        if not waited:
            print(
                "migrate: waiting for pg_cron's running job to finish (pg_cron before 1.5"
                " reads job changes only between jobs)",
                file=sys.stderr,
            )
            waited = True
        time.sleep(1)
    if waited:
        time.sleep(2)
    connection.execute(text("select pgseek.reload_jobs()"))
    connection.commit()
    print("migrate: pg_cron told to read its jobs again (pgseek.reload_jobs())", file=sys.stderr)


def run_offline() -> None:
    """`--sql` mode: print the SQL for a DBA to review, touching no database. Applied with
    psql, it does what `make migrate` does: the revisions, each in its transaction with
    its checksum recorded, then at head sql/ in one transaction (its files, the drop of
    stale objects, the record of what was applied)."""
    context.configure(
        dialect_name="postgresql",
        version_table_schema=META_SCHEMA,
        transaction_per_migration=True,
        literal_binds=True,
        on_version_apply=record_step,
    )
    out = context.get_context().impl.static_output
    for ddl in META_DDL:
        out(f"{ddl};\n")
    with context.begin_transaction():
        context.run_migrations()
    destination = context.get_revision_argument()
    heads = set(ScriptDirectory.from_config(config).get_heads())
    if destination in ("head", "heads") or {destination} == heads:
        files = checksums.repeatable_files()
        out("-- the repeatable objects, in one transaction (000-search-path.sql sets the path")
        out("-- for it, 990-search-path.sql pins it on the functions it created)\nBEGIN;\n")
        for f in files:
            out(f"-- repeatable object file sql/{f.name}\n{f.read_text().strip()}\n")
        out(f"-- what sql/ no longer creates\n{DROP_STALE_SQL.strip()};\n")
        out(f"delete from {META_SCHEMA}.repeatable_objects;\n")
        for f in files:
            out(
                f"insert into {META_SCHEMA}.repeatable_objects (file, checksum)"
                f" values ({literal(f.name)}, {literal(checksums.file_checksum(f))});\n"
            )
        out("COMMIT;\n")


def is_read_only() -> bool:
    """True for commands that must not change the database (`alembic current`)."""
    return bool(context._proxy.context_opts.get("dont_mutate", False))


def show_notice(diagnostic) -> None:
    """Server NOTICEs and WARNINGs reach the person migrating (roles kept by a downgrade,
    pg_cron not created in this database, a schema anyone may write to), except the
    "already exists, skipping" kind that idempotent DDL produces on every run."""
    message = diagnostic.message_primary or ""
    if message.endswith(", skipping"):
        return
    print(f"migrate: {diagnostic.severity}: {message}", file=sys.stderr)
    if diagnostic.message_hint:
        print(f"migrate: HINT: {diagnostic.message_hint}", file=sys.stderr)


def refuse_read_only(connection: Connection) -> None:
    """One line, not a traceback, where nothing can be written."""
    recovery, read_only = connection.execute(
        text("select pg_catalog.pg_is_in_recovery(), current_setting('transaction_read_only')")
    ).one()
    connection.commit()
    if recovery:
        sys.exit("migrate: the database is a standby (in recovery): migrate its primary")
    if read_only == "on":
        sys.exit(
            "migrate: the database is read-only (default_transaction_read_only is on for"
            " this database or role): migrate as a role that may write"
        )


def superuser_problem(connection: Connection) -> str | None:
    """Why sql/ cannot be applied by this role, when it would have to be (it changed
    since it was applied, or never was): its PL/Python functions are created again on
    every apply, and plpython3u is untrusted (superusers only)."""
    files = checksums.repeatable_files()
    wanted = {f.name: checksums.file_checksum(f) for f in files}
    superuser, role, applied = connection.execute(
        text(
            "select rolsuper, rolname,"
            f" (select coalesce(jsonb_object_agg(file, checksum), '{{}}')"
            f" from {META_SCHEMA}.repeatable_objects)"
            " from pg_catalog.pg_roles where rolname = current_user"
        )
    ).one()
    connection.commit()
    if superuser or applied == wanted or not any("plpython3u" in f.read_text() for f in files):
        return None
    return (
        f"migrate: sql/ must be applied and it creates PL/Python functions (plpython3u is"
        f" untrusted), which needs a superuser; {role} is not: migrate as a superuser"
    )


def database_error(error: Exception) -> str:
    """The server's message in one line (and its hint)."""
    original = getattr(error, "orig", None) or error
    diag = getattr(original, "diag", None)
    message = (diag and diag.message_primary) or (str(original).strip() or repr(original))
    message = message.splitlines()[0]
    if diag and diag.message_hint:
        message += f" (HINT: {diag.message_hint})"
    return message


def run_online() -> None:
    url = database_url()
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: connect_libpq(url), poolclass=pool.NullPool
    )
    script = ScriptDirectory.from_config(config)
    with engine.connect() as connection:
        connection.connection.driver_connection.add_notice_handler(show_notice)
        if is_read_only():
            context.configure(connection=connection, version_table_schema=META_SCHEMA)
            with context.begin_transaction():
                context.run_migrations()
            return
        try:
            migrate(connection, script)
        except (psycopg.Error, DBAPIError, sqlfile.UnsafeSection) as e:
            what = RUNNING.get("what")
            sys.exit(
                f"migrate: {what} failed: {database_error(e)}"
                if what
                else f"migrate: {database_error(e)}"
            )


def migrate(connection: Connection, script: ScriptDirectory) -> None:
    refuse_read_only(connection)
    acquire_lock(connection)
    prepare_meta(connection)
    validate_applied(connection, script)
    interrupted = interrupted_revisions(connection)
    problem = superuser_problem(connection)
    context.configure(
        connection=connection,
        version_table_schema=META_SCHEMA,
        transaction_per_migration=True,
        on_version_apply=record_step,
    )
    migration_context = context.get_context()
    migration_context._migrations_fn = plan_steps(
        migration_context._migrations_fn, interrupted, set(script.get_heads()), problem
    )
    before = set(migration_context.get_current_heads())
    connection.commit()
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
    RUNNING.pop("what", None)
    heads = set(context.get_context().get_current_heads())
    connection.commit()
    RUNNING["what"] = "applying sql/"
    changed = apply_repeatables(connection, at_head=heads == set(script.get_heads()))
    RUNNING.pop("what", None)
    connection.execute(text("select pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": LOCK_KEY})
    connection.commit()
    if changed or heads != before:
        reload_pg_cron_jobs(connection)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
