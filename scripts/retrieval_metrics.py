"""Retrieval quality metrics, as BEIR and trec_eval compute them.

`judgments` maps a document id to its graded relevance (0 = judged not relevant, 1 =
relevant, 2 = highly relevant); documents not in it are unjudged and count as 0.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain: the gain at rank i (from 1) divided by log2(i + 1)."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def ndcg_at_k(ranked: Sequence[str], judgments: Mapping[str, int], k: int = 10) -> float:
    """DCG of the top k with graded gains, over the DCG of the best possible top k drawn
    from all judged documents. 0 when no judged document is relevant."""
    ideal = dcg(sorted(judgments.values(), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([judgments.get(doc, 0) for doc in ranked[:k]]) / ideal


def recall_at_k(
    ranked: Sequence[str], judgments: Mapping[str, int], k: int = 100, min_grade: int = 1
) -> float:
    """Share of the relevant documents (grade >= min_grade) found in the top k.
    0 when no judged document is relevant."""
    relevant = {doc for doc, grade in judgments.items() if grade >= min_grade}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def paired_difference(
    scores: Sequence[float], baseline: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> dict:
    """How a method's per-query scores differ from a baseline's on the same queries: the
    mean difference, its 95% interval by the paired bootstrap (queries resampled with
    replacement, `resamples` times, seeded: the same inputs give the same interval), and
    the queries where it scores higher and lower. An interval that contains 0 says the
    queries cannot tell the two apart."""
    if len(scores) != len(baseline) or not scores:
        raise ValueError("scores and baseline must be non-empty and of the same length")
    differences = [s - b for s, b in zip(scores, baseline, strict=True)]
    rng = random.Random(seed)
    n = len(differences)
    means = sorted(sum(rng.choices(differences, k=n)) / n for _ in range(resamples))
    return {
        "mean": sum(differences) / n,
        "low": means[int(0.025 * resamples)],
        "high": means[int(0.975 * resamples) - 1],
        "better": sum(d > 1e-12 for d in differences),
        "worse": sum(d < -1e-12 for d in differences),
    }
