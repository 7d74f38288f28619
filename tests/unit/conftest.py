"""Unit tests of the in-database package (plpython/pgseek): no PostgreSQL needed."""

import os
import sys
from pathlib import Path

import pytest

PLPYTHON_DIR = str(Path(__file__).resolve().parents[2] / "plpython")
if PLPYTHON_DIR not in sys.path:
    sys.path.insert(0, PLPYTHON_DIR)

# Nothing may be downloaded: make any Hugging Face Hub access fail instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def local_embedder():
    """One LocalEmbedder for the session, as PL/Python's GD keeps one per backend."""
    from pgseek.embeddings.local import LocalEmbedder

    return LocalEmbedder()
