"""Runs a migration's .sql file from its Alembic revision module.

A revision `versions/0002_x.py` runs `versions/0002_x.upgrade.sql` or
`versions/0002_x.downgrade.sql`. The file runs inside the revision's own transaction
except for sections that start with a line

    --! no-transaction

and end at a line `--! transaction` or at the end of the file. Statements in such a
section (for instance `create index concurrently`) cannot run in a transaction block,
so each runs on its own in autocommit mode, and the transaction before the section
commits when the section starts. So that a revision which fails after that commit can
simply be run again:
- the transaction that commits before a no-transaction section records, in
  pgseek_meta.revision_progress, which section comes next; a later run of the same
  revision skips the sections already committed (env.py clears the record in the
  transaction that records the revision as applied);
- a no-transaction section must be safe to run again from its start: it may only hold
  `set`/`reset`, `drop index concurrently if exists`, `create index concurrently` of an
  index the section dropped that way first (an INVALID index left by an interrupted
  build is then replaced, not kept), `alter type ... add value if not exists`,
  `vacuum` and `analyze`. check_sections() enforces it, before a revision runs and in
  `make lint`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic import context, op

NO_TRANSACTION = "--! no-transaction"
TRANSACTION = "--! transaction"
PROGRESS_TABLE = "pgseek_meta.revision_progress"

# What a no-transaction section may hold: statements that are safe to run again.
_NAME = r'(?:"[^"]+"|\w+)'
_INDEX = rf"(?:{_NAME}\.)?({_NAME})"
REPEATABLE_STATEMENTS = (
    re.compile(r"(set|reset)\s", re.I),
    re.compile(r"(vacuum|analyze)\b", re.I),
    re.compile(r"alter\s+type\s+\S+\s+add\s+value\s+if\s+not\s+exists\s", re.I),
)
DROP_INDEX = re.compile(rf"drop\s+index\s+concurrently\s+if\s+exists\s+{_INDEX}\s*;", re.I)
CREATE_INDEX = re.compile(
    rf"create\s+(?:unique\s+)?index\s+concurrently\s+(?:if\s+not\s+exists\s+)?{_INDEX}\s",
    re.I,
)


class UnsafeSection(ValueError):
    """A no-transaction section that is not safe to run again (see check_section())."""


@dataclass(frozen=True)
class Section:
    """A run of SQL that executes either in the revision's transaction or outside it."""

    sql: str
    in_transaction: bool

    def statements(self) -> list[str]:
        """Split a no-transaction section into statements (one per `;` at a line end)."""
        if "$$" in self.sql:
            raise ValueError("dollar-quoted bodies are not allowed in a no-transaction section")
        parts = re.split(r";[ \t]*(?:--[^\n]*)?\n", self.sql + "\n")
        return [p.strip() + ";" for p in parts if _has_code(p)]


def _code(statement: str) -> str:
    """A statement without its comment lines."""
    return "\n".join(
        line for line in statement.splitlines() if not line.strip().startswith("--")
    ).strip()


def check_section(section: Section) -> list[str]:
    """Why a no-transaction section is not safe to run again from its start (empty: it
    is)."""
    problems = []
    dropped: set[str] = set()
    for statement in section.statements():
        code = _code(statement)
        if drop := DROP_INDEX.match(code):
            dropped.add(drop.group(1).strip('"'))
        elif create := CREATE_INDEX.match(code):
            if create.group(1).strip('"') not in dropped:
                problems.append(
                    f"create index concurrently {create.group(1)} without a `drop index"
                    " concurrently if exists` of it before (a re-run would keep an INVALID"
                    " index, or fail)"
                )
        elif not any(p.match(code) for p in REPEATABLE_STATEMENTS):
            first = code.splitlines()[0] if code else statement
            problems.append(f"not safe to run again outside a transaction: {first[:80]}")
    return problems


def check_sections(path: Path) -> list[str]:
    """check_section() for every no-transaction section of a migration file."""
    try:
        sections = split_sections(path.read_text())
        return [
            f"{path.name}: {problem}"
            for s in sections
            if not s.in_transaction
            for problem in check_section(s)
        ]
    except ValueError as e:
        return [f"{path.name}: {e}"]


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


def split_sections(text: str) -> list[Section]:
    """Split a migration file into transactional and no-transaction sections."""
    sections: list[Section] = []
    lines: list[str] = []
    in_transaction = True
    for line in text.splitlines(keepends=True):
        marker = line.strip()
        if marker in (NO_TRANSACTION, TRANSACTION):
            if _has_code("".join(lines)):
                sections.append(Section("".join(lines), in_transaction))
            lines = []
            in_transaction = marker == TRANSACTION
        else:
            lines.append(line)
    if _has_code("".join(lines)):
        sections.append(Section("".join(lines), in_transaction))
    return sections


def sql_path(revision_file: str, direction: str) -> Path:
    """The .sql file of a revision module for 'upgrade' or 'downgrade'."""
    if direction not in ("upgrade", "downgrade"):
        raise ValueError(f"direction must be 'upgrade' or 'downgrade', not {direction!r}")
    return Path(revision_file).with_suffix(f".{direction}.sql")


def execute_sql(sql: str) -> None:
    """Execute SQL verbatim (no bind-parameter parsing), or print it in --sql mode."""
    if context.is_offline_mode():
        context.get_context().impl.static_output(sql.strip() + "\n")
        return
    # The driver connection of Alembic's connection: psycopg runs a parameterless
    # query as-is, several statements included, in the current transaction.
    op.get_bind().connection.driver_connection.execute(sql)


def _progress(key: str, direction: str) -> int:
    """The section a earlier, interrupted run of this revision got to (0: none)."""
    row = (
        op.get_bind()
        .connection.driver_connection.execute(
            f"select next_section from {PROGRESS_TABLE} where revision_file = %s"
            " and direction = %s",
            (key, direction),
        )
        .fetchone()
    )
    return row[0] if row else 0


def _record_progress(key: str, direction: str, next_section: int) -> None:
    op.get_bind().connection.driver_connection.execute(
        f"insert into {PROGRESS_TABLE} (revision_file, direction, next_section)"
        " values (%s, %s, %s) on conflict (revision_file, direction)"
        " do update set next_section = excluded.next_section, recorded_at = now()",
        (key, direction, next_section),
    )


def run_sql_file(revision_file: str, direction: str) -> None:
    """Run the upgrade or downgrade SQL file that belongs to a revision module, resuming
    after the sections an interrupted run committed."""
    path = sql_path(revision_file, direction)
    problems = check_sections(path)
    if problems:
        raise UnsafeSection("; ".join(problems))
    sections = split_sections(path.read_text())
    offline = context.is_offline_mode()
    key = Path(revision_file).stem
    start = 0 if offline else _progress(key, direction)
    if start:
        print(
            f"migrate: {path.name}: its first {start} section(s) committed in an earlier run;"
            " resuming after them",
            file=sys.stderr,
        )
    for number, section in enumerate(sections):
        if number < start:
            continue
        if section.in_transaction:
            execute_sql(section.sql)
            continue
        if not offline:  # committed by autocommit_block, with what came before
            _record_progress(key, direction, number)
        with op.get_context().autocommit_block():
            if offline:
                context.get_context().impl.static_output("-- outside a transaction:\n")
            for statement in section.statements():
                execute_sql(statement)
