"""pgspot over pgseek's SQL, as `make lint` runs it: `python scripts/pgspot_check.py`.

pgspot (PyPI) looks for SQL that an attacker could hijack through search_path:
unqualified names in routines without a pinned search_path, SECURITY DEFINER routines
without one, `create or replace` of objects someone else could have created first.
This runs it over sql/ and over the migrations from 0007 on, as one script in the order
they are applied (so it knows schema pgseek is pgseek's own), and adds what pgspot
0.9.4 cannot see or parse, each for a stated reason:

1. sql/000-search-path.sql sets `search_path = pg_catalog, pgseek, <pgvector's schema>,
   pg_temp` for the transaction that applies sql/, and sql/990-search-path.sql pins the
   same path on every function of schema pgseek whose body is parsed when it runs
   (ALTERs and set_config() with a computed value in DO blocks, which pgspot does not
   evaluate; tests/test_schema.py checks the result in the database, and 990 warns when
   pgvector's schema is writable by PUBLIC). So the files after 000 are checked as if
   run with pg_catalog, pgseek, pg_temp, and a function created in schema pgseek without
   a SET clause as if it had that path. SECURITY DEFINER functions must still say it
   themselves (pgspot's PS003).
2. pgspot crashes (IndexError) on SQL-standard bodies (`return ...`, `begin atomic`).
   PostgreSQL binds their names when they are created, under the file's path (see 1),
   and 990 leaves them unpinned (so they can be inlined): their statements are checked
   with the file's path, and no SET clause is asked of them.
3. pgspot hands the expression of a PL/pgSQL `return next <expr>` to its SQL parser
   without `select`, which fails: it is checked as `select <expr>`.
4. Procedures cannot pin search_path (a procedure with a SET clause cannot commit), and
   990 leaves them alone. PROCEDURES lists the ones that commit (pgspot's PS005 is not
   reported for them); their bodies qualify every function, type and table (checked),
   and use built-in operators on built-in types (pgspot's PS001, not checked for them):
   pg_catalog is searched first, so such an operator can be redirected only through a
   schema on the *caller's* path that others may create objects in; pg_cron runs them
   as the installing role.
Migrations 0001-0006 were released before pgspot joined `make lint` (frozen.txt): they
are read for what they create, not checked.
"""

from __future__ import annotations

import contextlib
import io
import sys
from argparse import Namespace
from pathlib import Path

from pglast import ast, parse_sql
from pglast.enums.parsenodes import VariableSetKind
from pgspot import visitors
from pgspot.state import Counter, State

ROOT = Path(__file__).resolve().parent.parent
CHECKED_FROM = "0007"  # migrations before this one are read, not checked
PROCEDURES = {"pgseek.run_embedding_worker", "pgseek.purge_expired"}
PINNED_BY_990 = ["pg_catalog", "pgseek", "pg_temp"]
APPLY_PATH_FILE = "000-search-path.sql"  # sets PINNED_BY_990 (+ pgvector's) for sql/
LANGUAGES = ["plpython3u"]  # bodies pgspot cannot read (thin wrappers over plpython/)


def _function_name(node: ast.CreateFunctionStmt) -> str:
    return ".".join(n.sval for n in node.funcname)


def _flatten(items):
    for item in items:
        if isinstance(item, (tuple, list)):
            yield from _flatten(item)
        elif item is not None:
            yield item


_original_create_function = visitors.SQLVisitor.visit_CreateFunctionStmt


def visit_create_function(self, ancestors, node):
    """pgspot's check, with the additions 1, 2 and 4 above."""
    options = list(node.options or ())
    path = [o.arg for o in options if o.defname == "set" and o.arg.name == "search_path"]
    in_pgseek = len(node.funcname) == 2 and node.funcname[0].sval == "pgseek"
    definer = any(o.defname == "security" and o.arg.boolval for o in options)
    body = node.sql_body
    bound_when_created = body is not None and not path and not definer
    if in_pgseek and not path and not node.is_procedure and not definer:  # 1: 990's path
        path = [
            ast.VariableSetStmt(
                kind=VariableSetKind.VAR_SET_VALUE,
                name="search_path",
                args=tuple(ast.A_Const(val=ast.String(sval=s)) for s in PINNED_BY_990),
                is_local=False,
            )
        ]
        options.append(ast.DefElem(defname="set", arg=path[0]))
    node.sql_body = None  # the visitor would walk into it next, with the file's path
    if body is not None:  # 2: an empty AS body for pgspot; the statements are checked below
        options = [o for o in options if o.defname != "language"]
        options.append(ast.DefElem(defname="language", arg=ast.String(sval="sql")))
        options.append(ast.DefElem(defname="as", arg=(ast.String(sval=""),)))
    patched = ast.CreateFunctionStmt(
        is_procedure=node.is_procedure,
        replace=node.replace,
        funcname=node.funcname,
        parameters=node.parameters,
        returnType=node.returnType,
        options=tuple(options),
    )
    counter = self.state.counter
    report = counter.warn
    if _function_name(node) in PROCEDURES or bound_when_created:

        def without(code, context):  # 4: operators of procedures that commit; 2
            hidden = ("PS005",) if bound_when_created else ("PS001", "PS005")
            if code not in hidden:
                report(code, context)

        counter.warn = without
    try:
        _original_create_function(self, ancestors, patched)
    finally:
        counter.warn = report
    if body is not None:
        state = State(counter)
        state.created_schemas = self.state.created_schemas
        if bound_when_created:
            state.searchpath_secure = self.state.searchpath_secure
        else:
            state.searchpath_secure = bool(path) and self.state.is_secure_searchpath(path[0])
        statements = body if isinstance(body, (tuple, list)) else (body,)
        for statement in _flatten(statements):
            visitors.SQLVisitor(state)(statement)


_original_plpgsql_visit = visitors.PLPGSQLVisitor.visit


def visit_plpgsql(self, node):
    """Addition 3: `return next <expr>` is checked as `select <expr>`."""
    if isinstance(node, dict) and "PLpgSQL_stmt_return_next" in node:
        expr = node["PLpgSQL_stmt_return_next"].get("expr")
        if expr:
            visitors.visit_sql(self.state, "SELECT " + expr["PLpgSQL_expr"]["query"])
        return
    _original_plpgsql_visit(self, node)


visitors.SQLVisitor.visit_CreateFunctionStmt = visit_create_function
visitors.PLPGSQLVisitor.visit = visit_plpgsql


def files() -> tuple[list[Path], list[Path]]:
    """(read only, checked), in the order they are applied."""
    versions = sorted((ROOT / "migrations" / "versions").glob("*.upgrade.sql"))
    read = [p for p in versions if p.name < CHECKED_FROM]
    checked = [p for p in versions if p.name >= CHECKED_FROM]
    checked += sorted((ROOT / "migrations" / "versions").glob("*.downgrade.sql"))
    checked = [p for p in checked if p.name >= CHECKED_FROM]
    checked += sorted((ROOT / "sql").glob("*.sql"))
    return read, checked


def main(argv: list[str]) -> int:
    """Checks pgseek's SQL, or the files named in argv (after what the migrations up
    to CHECKED_FROM create); returns the exit status."""
    args = Namespace(
        append=True,
        proc_without_search_path=[],
        summary_only=False,
        plpgsql=True,
        explain=None,
        ignore=[],
        ignore_lang=LANGUAGES,
        sql_fn=[],
        files=[],
    )
    read, checked = files()
    if argv:
        checked = [Path(a).resolve() for a in argv]
    schemas: list[str] = []
    for path in read:
        for stmt in parse_sql(path.read_text()):
            if isinstance(stmt.stmt, ast.CreateSchemaStmt):
                schemas.append(stmt.stmt.schemaname)
    total = Counter(args)
    failed = []
    for path in checked:
        counter = Counter(args)
        state = State(counter)
        state.created_schemas = schemas  # shared: what earlier files created
        if path.parent.name == "sql" and path.name > APPLY_PATH_FILE:  # 1: 000's path
            state.set_searchpath(PINNED_BY_990, local=True)
        findings = io.StringIO()
        with contextlib.redirect_stdout(findings):
            try:
                visitors.visit_sql(state, path.read_text(), toplevel=True)
            except Exception as exc:  # a file pgspot cannot read is a finding too
                counter.fatals += 1
                print(f"pgspot could not check it: {exc!r}")
        if not counter.is_clean():
            failed.append(path)
            print(f"{_shown(path)}: {counter}\n{findings.getvalue()}")
        total.add(counter)
    if failed:
        print(f"pgspot: {total} in {len(failed)} of {len(checked)} files")
        return 1
    print(f"pgspot: {len(checked)} files clean")
    return 0


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
