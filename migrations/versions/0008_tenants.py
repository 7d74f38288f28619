"""Tenants: a tenant column with row-level security, and BM25 statistics per tenant.

The SQL is in the .upgrade.sql and .downgrade.sql files beside this one; switching row
security on and off is pgseek.enable_tenants() / disable_tenants() (sql/130-tenants.sql).
"""

from sqlfile import run_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__, "upgrade")


def downgrade() -> None:
    run_sql_file(__file__, "downgrade")
