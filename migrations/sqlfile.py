"""Runs a migration's .sql file from its Alembic revision module.

A revision `versions/0002_x.py` runs `versions/0002_x.upgrade.sql` or
`versions/0002_x.downgrade.sql`. The file runs inside the revision's own transaction
except for sections that start with a line

    --! no-transaction

and end at a line `--! transaction` or at the end of the file. Statements in such a
section (for instance `create index concurrently`) cannot run in a transaction block,
so each runs on its own in autocommit mode. They must therefore be safe to re-run after
an interruption: precede `create index concurrently` with
`drop index concurrently if exists` of the same name, so an INVALID index left by an
interrupted build is replaced rather than silently kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from alembic import context, op

NO_TRANSACTION = "--! no-transaction"
TRANSACTION = "--! transaction"


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


def run_sql_file(revision_file: str, direction: str) -> None:
    """Run the upgrade or downgrade SQL file that belongs to a revision module."""
    for section in split_sections(sql_path(revision_file, direction).read_text()):
        if section.in_transaction:
            execute_sql(section.sql)
            continue
        with op.get_context().autocommit_block():
            if context.is_offline_mode():
                context.get_context().impl.static_output("-- outside a transaction:\n")
            for statement in section.statements():
                execute_sql(statement)
