"""The ONNX int8 embedder agrees with sentence-transformers' all-MiniLM-L6-v2.

reference_embeddings.json holds the reference model's vectors for a fixed sample
(written by scripts/reference_embeddings.py with PyTorch and sentence-transformers), so
the check runs everywhere; where requirements/reference.txt is installed, the live
comparison below runs as well. The model is never downloaded.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from pgseek.embeddings.local import LocalEmbedder
from pgseek.embeddings.tokenizer import default_tokenizer_path

REFERENCE = json.loads((Path(__file__).parent / "reference_embeddings.json").read_text())
SAMPLES = [s["text"] for s in REFERENCE["samples"]]
MIN_COSINE = 0.99


@pytest.mark.parametrize("batch_size", [32, 3])
def test_local_vectors_match_the_stored_reference_vectors(batch_size):
    reference = np.array([s["embedding"] for s in REFERENCE["samples"]], dtype=np.float32)
    local = LocalEmbedder(batch_size=batch_size).embed_array(SAMPLES)
    cosines = (reference * local).sum(axis=1)
    print(f"cosine vs {REFERENCE['generator']}: min {cosines.min():.4f} mean {cosines.mean():.4f}")
    worst = SAMPLES[int(np.argmin(cosines))]
    assert len(SAMPLES) >= 20
    assert cosines.min() >= MIN_COSINE, f"{cosines.min():.4f} for {worst!r}"


@pytest.mark.slow
def test_local_vectors_match_sentence_transformers_live():
    sentence_transformers = pytest.importorskip(
        "sentence_transformers",
        reason="live check needs requirements/reference.txt (PGSEEK_WITH_REFERENCE=1 make install)",
    )
    model = sentence_transformers.SentenceTransformer(
        str(default_tokenizer_path().parent), device="cpu"
    )
    assert model.max_seq_length == 256
    reference = model.encode(SAMPLES, normalize_embeddings=True, batch_size=8)
    local = LocalEmbedder().embed_array(SAMPLES)
    assert ((reference * local).sum(axis=1)).min() >= MIN_COSINE
