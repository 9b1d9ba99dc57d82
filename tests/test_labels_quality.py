"""hubert.labels.quality against hand-computed joint tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hubert.labels.quality import (
    UttLabels,
    bigram_entropy_bits,
    conditional_pnmi,
    entropy_bits,
    frame_centres,
    joint_counts,
    label_quality,
    mutual_information_bits,
    phones_at,
    purity_scores,
    unit_and_pair_counts,
)
from tests.testdata import non_numeric_leaves


def test_perfect_and_useless_tables():
    assert purity_scores(np.array([[2, 0], [0, 2]])) == {"pnmi": 1.0, "phone_purity": 1.0, "cluster_purity": 1.0}
    assert purity_scores(np.array([[1, 1], [1, 1]])) == {"pnmi": 0.0, "phone_purity": 0.5, "cluster_purity": 0.5}
    with pytest.raises(ValueError, match="empty"):
        purity_scores(np.zeros((2, 2)))


def test_hand_computed_asymmetric_table():
    # phones y (rows) a, b; units z (columns) 0, 1, 2; 8 frames
    joint = np.array([[3, 1, 0],
                      [0, 1, 3]])
    got = purity_scores(joint)
    # phone purity: each unit's majority phone: (3 + 1 + 3) / 8
    assert got["phone_purity"] == pytest.approx(7 / 8)
    # cluster purity: each phone's majority unit: (3 + 3) / 8
    assert got["cluster_purity"] == pytest.approx(6 / 8)
    # H(y) = 1 bit; H(y | z) = p(z=1) * 1 bit = 1/4 (units 0 and 2 are pure); PNMI = (1 - 1/4) / 1
    assert got["pnmi"] == pytest.approx(0.75)
    # the same through the three entropies: I = H(y) + H(z) - H(y, z)
    h_z = -(2 * 3 / 8 * math.log2(3 / 8) + 1 / 4 * math.log2(1 / 4))
    h_yz = -(2 * 3 / 8 * math.log2(3 / 8) + 2 * 1 / 8 * math.log2(1 / 8))
    assert got["pnmi"] == pytest.approx(1 + h_z - h_yz)
    # phones and units swapped: purities swap, PNMI is normalised by H(units) instead
    swapped = purity_scores(joint.T)
    assert (swapped["phone_purity"], swapped["cluster_purity"]) == pytest.approx((6 / 8, 7 / 8))
    assert swapped["pnmi"] == pytest.approx(0.75 / h_z)


def test_entropy_and_mutual_information():
    assert entropy_bits(np.array([1, 1, 1, 1])) == pytest.approx(2.0)
    assert entropy_bits(np.array([5, 0])) == 0.0
    assert mutual_information_bits(np.array([[4, 0], [0, 4]])) == pytest.approx(1.0)
    assert mutual_information_bits(np.array([[2, 2], [2, 2]])) == pytest.approx(0.0)


def test_joint_counts():
    got = joint_counts(np.array([0, 0, 1, 1, 1]), np.array([2, 2, 0, 2, 2]), 2, 3)
    assert got.tolist() == [[0, 0, 2], [1, 0, 2]]


def test_phones_at_frame_centres():
    alignment = [["sil", 0.0, 0.05], ["a", 0.05, 0.12], ["b", 0.12, 0.2]]
    centres = frame_centres(5, 50.0)  # 0.0125, 0.0325, 0.0525, 0.0725, 0.0925
    assert np.allclose(centres, [0.0125, 0.0325, 0.0525, 0.0725, 0.0925])
    assert phones_at(alignment, centres) == ["sil", "sil", "a", "a", "a"]
    assert phones_at(alignment, np.array([0.25])) == ["b"]  # past the end: the last phone


def test_label_quality_counts_and_skips_unaligned():
    ali = [["a", 0.0, 0.03], ["b", 0.03, 0.05]]
    utts = [UttLabels("en", ali, np.array([0, 0, 1, 1])),  # 100 Hz: centres 12.5, 22.5, 32.5, 42.5 ms
            UttLabels("zh", ali, np.array([2, 2, 3, 3])),
            UttLabels("zh", None, np.array([0, 1, 2, 3, 0]))]
    m = label_quality(utts, 100.0, n_clusters=4, seed=0)
    assert m["utterances"] == {"total": 3, "aligned": 2, "without_alignment": 1}
    assert m["frames"] == {"total": 13, "aligned": 8}
    # units 0/1 = en:a/en:b, 2/3 = zh:a/zh:b (phones carry their language): perfect labels
    assert (m["pnmi_prefixed"], m["phone_purity"], m["cluster_purity"]) == (1.0, 1.0, 1.0)
    assert (m["pnmi_conditional"], m["pnmi_per_language_mean"]) == (1.0, 1.0)
    assert m["phones"] == 4
    assert m["per_language"]["en"]["pnmi"] == 1.0 and m["per_language"]["zh"]["utterances"] == 2
    # language: the unaligned zh utterance uses every unit, so the units are not fully language-specific
    lang = np.array([[2, 2, 0, 0], [2, 1, 3, 3]])  # (en, zh) x units over all 13 frames
    h_l = entropy_bits(lang.sum(1))
    assert m["language"]["nmi"] == pytest.approx(mutual_information_bits(lang) / h_l, abs=1e-4)
    assert m["language"]["majority_baseline"] == pytest.approx(9 / 13, abs=1e-4)
    assert m["language"]["purity"] == pytest.approx((2 + 2 + 3 + 3) / 13, abs=1e-4)
    assert m["per_language"]["en"]["usage_entropy_bits"] == 1.0 and m["per_language"]["en"]["units_used"] == 2
    assert not non_numeric_leaves(m)


def test_shuffled_floor_is_far_below_real_labels():
    rng = np.random.default_rng(0)
    utts = []
    for _ in range(30):
        phones = rng.integers(0, 6, size=20)
        ali = [[f"p{p}", i * 0.05, (i + 1) * 0.05] for i, p in enumerate(phones)]
        centres = frame_centres(100, 100.0)  # 1 s of 100 Hz units that follow the phones exactly
        units = phones[np.minimum((centres / 0.05).astype(int), 19)]
        utts.append(UttLabels("en", ali, units))
    m = label_quality(utts, 100.0, n_clusters=6, seed=1)
    assert m["pnmi_conditional"] > 0.9 and m["pnmi_conditional_shuffled"] < 0.05
    assert m["pnmi_prefixed"] == m["pnmi_conditional"]  # one language: nothing to tell apart
    assert m == label_quality(utts, 100.0, n_clusters=6, seed=1)  # seeded
    assert m["language"]["nmi"] == 0.0  # one language



# ---------------------------------------------------------------- mixed languages
def two_language_utts(units_en: list[int], units_zh: list[int]) -> list[UttLabels]:
    """One en and one zh utterance with phones a, b (each 2 frames at 100 Hz)."""
    ali = [["a", 0.0, 0.025], ["b", 0.025, 0.05]]  # frame centres 12.5, 22.5 | 32.5, 42.5 ms
    return [UttLabels("en", ali, np.array(units_en)), UttLabels("zh", ali, np.array(units_zh))]


def test_units_that_only_tell_the_language_apart_know_no_phone():
    # unit 0 for all of en, unit 1 for all of zh: I(phone; unit) = I(language; unit) = 1 bit
    m = label_quality(two_language_utts([0, 0, 0, 0], [1, 1, 1, 1]), 100.0, n_clusters=2, seed=0)
    assert m["pnmi_conditional"] == 0.0 and m["pnmi_per_language_mean"] == 0.0
    assert m["pnmi_prefixed"] == pytest.approx(0.5, abs=1e-4)  # 1 bit of H(phone) = 2 bits: the old headline
    assert m["language"]["information_bits"] == pytest.approx(1.0) and m["language"]["nmi"] == 1.0


def test_units_shared_across_languages_that_tell_phones_apart_are_fully_phonetic():
    # unit 0 = a, unit 1 = b in both languages: the units know the phone, not the language
    m = label_quality(two_language_utts([0, 0, 1, 1], [0, 0, 1, 1]), 100.0, n_clusters=2, seed=0)
    assert m["pnmi_conditional"] == 1.0 and m["pnmi_per_language_mean"] == 1.0
    assert m["per_language"]["en"]["pnmi"] == 1.0 and m["per_language"]["zh"]["pnmi"] == 1.0
    assert m["pnmi_prefixed"] == pytest.approx(0.5, abs=1e-4)  # I = 1 bit of H(prefixed phone) = 2 bits
    assert m["language"]["information_bits"] == 0.0


def test_conditional_pnmi_weights_languages_by_frames_not_by_count():
    perfect = np.array([[3, 0], [0, 3]])      # en: 6 frames, PNMI 1
    useless = np.array([[1, 1], [1, 1]]) * 6  # zh: 24 frames, PNMI 0, H(phone | zh) = 1 bit
    got = conditional_pnmi([perfect, useless])
    assert got["pnmi_per_language_mean"] == pytest.approx(6 / 30)  # sum_l p(l) PNMI_l
    assert got["pnmi_conditional"] == pytest.approx((6 / 30 * 1.0) / (6 / 30 * 1.0 + 24 / 30 * 1.0))
    uneven = np.array([[6, 0, 0], [0, 3, 0], [0, 0, 3]])  # H = 1.5 bits, perfectly predicted
    got = conditional_pnmi([uneven, useless])
    # I(Y;Z|L) / H(Y|L) = p_en * 1.5 / (p_en * 1.5 + p_zh * 1), not the mean of the two PNMIs
    assert got["pnmi_conditional"] == pytest.approx((12 / 36 * 1.5) / (12 / 36 * 1.5 + 24 / 36 * 1.0))
    assert got["pnmi_per_language_mean"] == pytest.approx(12 / 36)
    with pytest.raises(ValueError, match="no aligned frames"):
        conditional_pnmi([np.zeros((2, 2))])


def test_unit_and_pair_counts_stream_in_chunks_and_give_the_bigram_entropy():
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 5, size=n) for n in (0, 1, 7, 30, 12)]
    counts, pairs = unit_and_pair_counts(sequences, 5)
    assert counts.sum() == 50 and pairs.sum() == 6 + 29 + 11
    small_counts, small_pairs = unit_and_pair_counts(iter(sequences), 5, chunk_frames=3)  # many flushes
    assert np.array_equal(small_counts, counts) and np.array_equal(small_pairs, pairs)
    prev = np.concatenate([x[:-1] for x in sequences if len(x) > 1])
    cur = np.concatenate([x[1:] for x in sequences if len(x) > 1])
    joint = joint_counts(prev, cur, 5, 5)
    assert np.array_equal(pairs, joint)
    expected = entropy_bits(joint.ravel()) - entropy_bits(joint.sum(1))
    assert bigram_entropy_bits(sequences, 5) == pytest.approx(expected)
    assert bigram_entropy_bits([np.array([3])], 5) == 0.0  # no pair at all
