"""Purge runs record their backend: a 'running' row of pgseek.purge_log is alive while
that backend is still in the statement that started the run (pg_stat_activity), which a
pooled connection's next statement or its idle state shows at once. It replaces the
session-level advisory lock, which an error escaping the run left held (and the row
'running') for the connection's lifetime.

The SQL is in the .upgrade.sql and .downgrade.sql files beside this one.
"""

from sqlfile import run_sql_file

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__, "upgrade")


def downgrade() -> None:
    run_sql_file(__file__, "downgrade")
