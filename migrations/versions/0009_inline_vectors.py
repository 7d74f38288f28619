"""Vectors stored inline: documents keep rows up to a page whole instead of moving the
embedding to TOAST.

The SQL is in the .upgrade.sql and .downgrade.sql files beside this one.
"""

from sqlfile import run_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__, "upgrade")


def downgrade() -> None:
    run_sql_file(__file__, "downgrade")
