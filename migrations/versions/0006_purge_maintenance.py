"""Maintenance after large purges: when to run it, and where each run stands.

The SQL is in the .upgrade.sql and .downgrade.sql files beside this one.
"""

from sqlfile import run_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__, "upgrade")


def downgrade() -> None:
    run_sql_file(__file__, "downgrade")
