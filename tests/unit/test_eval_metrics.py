"""nDCG@k and recall@k of scripts/retrieval_metrics.py (used by `make eval`), on textbook
examples whose answers can be checked by hand, and the paired comparison of two methods."""

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from retrieval_metrics import dcg, ndcg_at_k, paired_difference, recall_at_k


def test_dcg_discounts_rank_i_by_log2_of_i_plus_1():
    # ranks 1, 3 and 7 are discounted by log2(2) = 1, log2(4) = 2 and log2(8) = 3
    assert dcg([2, 0, 2, 0, 0, 0, 3]) == pytest.approx(2 + 1 + 1)


def test_ndcg_of_the_ideal_ranking_is_1():
    judgments = {"a": 2, "b": 1, "c": 0}
    assert ndcg_at_k(["a", "b", "c"], judgments) == pytest.approx(1.0)


def test_ndcg_of_a_single_relevant_document_at_rank_3_is_one_half():
    assert ndcg_at_k(["x", "y", "a"], {"a": 1}) == pytest.approx(0.5)


def test_ndcg_wikipedia_example_with_ideal_from_all_judged_documents():
    # https://en.wikipedia.org/wiki/Discounted_cumulative_gain#Example: grades 3,2,3,0,1,2
    # retrieved; two more judged documents (3 and 2) were not, so the ideal top 6 is
    # 3,3,3,2,2,2: DCG6 = 6.861, IDCG6 = 8.740, nDCG6 = 0.785.
    ranked = ["d1", "d2", "d3", "d4", "d5", "d6"]
    judgments = {"d1": 3, "d2": 2, "d3": 3, "d4": 0, "d5": 1, "d6": 2, "d7": 3, "d8": 2}
    assert ndcg_at_k(ranked, judgments, k=6) == pytest.approx(6.861 / 8.740, abs=1e-3)


def test_ndcg_counts_unjudged_documents_as_not_relevant():
    unjudged = ndcg_at_k(["unjudged", "a"], {"a": 1})
    assert unjudged == ndcg_at_k(["judged", "a"], {"a": 1, "judged": 0})


def test_ndcg_ignores_documents_below_rank_k():
    ranked = [f"x{i}" for i in range(10)] + ["a"]
    assert ndcg_at_k(ranked, {"a": 2}) == 0.0
    assert ndcg_at_k(ranked, {"a": 2}, k=11) > 0


def test_ndcg_is_0_without_relevant_judgments():
    assert ndcg_at_k(["a", "b"], {"a": 0}) == 0.0


def test_recall_is_the_share_of_relevant_documents_found():
    judgments = {"a": 1, "b": 2, "c": 0, "d": 1}
    assert recall_at_k(["a", "c", "x", "b"], judgments) == pytest.approx(2 / 3)


def test_recall_only_counts_the_top_k():
    judgments = {"a": 1, "b": 2, "d": 1}
    assert recall_at_k(["a", "c", "x", "b"], judgments, k=1) == pytest.approx(1 / 3)


def test_recall_relevance_threshold_is_a_grade():
    judgments = {"a": 1, "b": 2, "d": 1}
    assert recall_at_k(["a", "b"], judgments, min_grade=2) == 1.0


def test_recall_is_0_without_relevant_judgments():
    assert recall_at_k(["a"], {"a": 0}) == 0.0


def test_paired_difference_of_identical_scores_is_zero():
    d = paired_difference([0.5, 0.2, 0.9], [0.5, 0.2, 0.9])
    assert (d["mean"], d["low"], d["high"], d["better"], d["worse"]) == (0, 0, 0, 0, 0)


def test_paired_difference_interval_holds_the_mean_and_excludes_0_for_a_clear_gain():
    rng = random.Random(1)
    baseline = [rng.random() for _ in range(40)]
    scores = [b + 0.1 + rng.uniform(-0.02, 0.02) for b in baseline]
    d = paired_difference(scores, baseline)
    assert d["low"] <= d["mean"] <= d["high"]
    assert d["low"] > 0 and d["better"] == 40 and d["worse"] == 0
    assert paired_difference(scores, baseline) == d  # seeded


def test_paired_difference_interval_contains_0_for_noise():
    rng = random.Random(2)
    baseline = [rng.random() for _ in range(40)]
    noise = [rng.uniform(0, 0.1) for _ in range(20)]
    scores = [b + e for b, e in zip(baseline, noise + [-e for e in noise], strict=True)]
    d = paired_difference(scores, baseline)  # as many wins as losses, mean 0
    assert abs(d["mean"]) < 1e-12 and d["low"] < 0 < d["high"]
    assert (d["better"], d["worse"]) == (20, 20)


def test_paired_difference_needs_matching_lists():
    with pytest.raises(ValueError, match="same length"):
        paired_difference([0.1], [0.1, 0.2])
