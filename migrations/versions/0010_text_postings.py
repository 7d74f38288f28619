"""Keyword postings: every document's lexemes with their term frequencies, in a narrow
table whose primary key BM25 reads without touching the documents.

The SQL is in the .upgrade.sql and .downgrade.sql files beside this one.
"""

from sqlfile import run_sql_file

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(__file__, "upgrade")


def downgrade() -> None:
    run_sql_file(__file__, "downgrade")
