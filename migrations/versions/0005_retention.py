"""Retention: policies by metadata match, the purge log, and purge settings.

The SQL is in the .upgrade.sql and .downgrade.sql files beside this one.
"""

from sqlfile import run_sql_file

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__, "upgrade")


def downgrade() -> None:
    run_sql_file(__file__, "downgrade")
