"""Roles: pgseek_reader, pgseek_writer and pgseek_admin, and nothing for PUBLIC.

The SQL is in the .upgrade.sql and .downgrade.sql files beside this one; the grants
themselves are in sql/985-grants.sql (repeatable: re-applied with the objects they cover).
"""

from sqlfile import run_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__, "upgrade")


def downgrade() -> None:
    run_sql_file(__file__, "downgrade")
