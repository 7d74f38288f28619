"""Search: keyword statistics for BM25 scoring, and search settings.

The SQL is in the .upgrade.sql and .downgrade.sql files beside this one.
"""

from sqlfile import run_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__, "upgrade")


def downgrade() -> None:
    run_sql_file(__file__, "downgrade")
