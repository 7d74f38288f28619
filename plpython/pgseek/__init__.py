"""pgseek's in-database Python: embedding providers, chunking and text helpers.

Runs inside PostgreSQL through PL/Python; nothing here imports ``plpy``.
"""

__version__ = "0.1.0"
