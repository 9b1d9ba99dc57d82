"""Property-based tests (hypothesis) of the pipeline's arithmetic invariants:

- fairseq feature shards (:func:`hubert.fairseq.formats.shard_range`) cover a split exactly once;
- temperature sampling (:func:`hubert.balance.splits.temperature_probs`) and the balanced
  pretraining list (:func:`hubert.balance.splits.balanced_list`) that follows it;
- batched MFCC (:func:`hubert.labels.mfcc.mfcc_batch`) equals one utterance at a time;
- label lengths at 100 Hz (MFCC) and 50 Hz (HuBERT CNN) match audio lengths within fairseq's
  tolerance, and :func:`hubert.labels.checks.estimate_frame_rate` recovers those rates.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubert.balance.splits import balanced_list, hours_by_lang, temperature_probs
from hubert.corpus.records import Utterance
from hubert.fairseq.formats import shard_range
from hubert.labels.checks import TOLERANCE_S, estimate_frame_rate
from hubert.labels.hubert_layers import conv_frames
from hubert.labels.mfcc import MFCC_DIM, MfccExtractor, mfcc, mfcc_batch
from hubert.pretrain.params import CONV_KERNELS_STRIDES

RATE = 16000
HUBERT_CONV = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2  # fairseq HuBERT's conv_feature_layers: stride 320, field 400


# ---------------------------------------------------------------- shards
@st.composite
def shard_counts(draw) -> tuple[int, int]:
    nshard = draw(st.integers(1, 200))
    return draw(st.integers(nshard, 10**7)), nshard


@settings(database=None)
@given(shard_counts())
def test_shard_ranges_cover_the_split_exactly_once(counts):
    total, nshard = counts
    ranges = [shard_range(total, nshard, rank) for rank in range(nshard)]
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(start < end for start, end in ranges)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:]))  # contiguous: no gap, no overlap


@settings(database=None)
@given(st.integers(0, 300), st.integers(1, 300))
def test_more_shards_than_lines_is_refused(total, extra):
    nshard = total + extra
    messages = []
    for rank in range(nshard):
        try:
            shard_range(total, nshard, rank)
        except ValueError as exc:
            messages.append(str(exc))
    assert messages, f"no shard of {nshard} over {total} lines was refused"
    assert all("lower features.nshard" in m for m in messages)


@settings(database=None)
@given(st.integers(1, 10**6), st.integers(1, 100), st.one_of(st.integers(-1000, -1), st.integers(0, 1000)))
def test_rank_outside_the_shards_is_refused(total, nshard, rank):
    if 0 <= rank < nshard:
        rank += nshard
    with pytest.raises(ValueError, match="outside"):
        shard_range(total, nshard, rank)


# ---------------------------------------------------------------- temperature sampling
amounts_st = st.dictionaries(st.sampled_from(["en", "zh", "fr", "de", "ja"]),
                             st.floats(1e-3, 1e4, allow_nan=False, allow_infinity=False), min_size=1)


@settings(database=None)
@given(amounts_st, st.floats(0.0, 1.0))
def test_temperature_probs_follow_the_formula(amounts, alpha):
    total = sum(amounts.values())
    weights = {lang: (n / total) ** alpha for lang, n in amounts.items()}
    z = sum(weights.values())
    probs = temperature_probs(amounts, alpha)
    assert probs.keys() == amounts.keys()
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    assert probs == pytest.approx({lang: w / z for lang, w in weights.items()}, rel=1e-9)


@settings(database=None)
@given(amounts_st)
def test_temperature_probs_alpha_one_is_natural_and_zero_is_uniform(amounts):
    total = sum(amounts.values())
    assert temperature_probs(amounts, 1.0) == pytest.approx({lang: n / total for lang, n in amounts.items()})
    assert temperature_probs(amounts, 0.0) == pytest.approx({lang: 1 / len(amounts) for lang in amounts})


# ---------------------------------------------------------------- balanced pretraining list
def _utterances(lang: str, samples: list[int], speakers: list[int]) -> list[Utterance]:
    return [Utterance(f"{lang}_{i}", lang, f"{lang}_s{spk}", f"audio/{lang}/{lang}_{i}.wav", n, "x")
            for i, (n, spk) in enumerate(zip(samples, speakers))]


@st.composite
def train_lists(draw, equal_durations: bool = False) -> list[Utterance]:
    """en + zh utterances of 1..10 s (16000..160000 samples at 16 kHz), several speakers each."""
    train: list[Utterance] = []
    for lang in ("en", "zh"):
        count = draw(st.integers(1, 30))
        if equal_durations:
            samples = [draw(st.integers(16000, 160000))] * count
        else:
            samples = draw(st.lists(st.integers(16000, 160000), min_size=count, max_size=count))
        speakers = draw(st.lists(st.integers(0, 4), min_size=count, max_size=count))
        train += _utterances(lang, samples, speakers)
    return draw(st.permutations(train))


@settings(database=None)
@given(train_lists(), st.floats(0.0, 1.0), st.integers(0, 2**16))
def test_balanced_list_hours_follow_temperature_sampling_within_half_an_utterance(train, alpha, seed):
    """Each language reaches p_l * T hours, T = max_l H_l / p_l (the least favoured language kept
    once), to within half of its longest utterance: the rest after whole copies is drawn by hours."""
    out = balanced_list(train, alpha, seed, RATE)
    natural = hours_by_lang(train, RATE)
    target = temperature_probs(natural, alpha)
    scale = max(natural[lang] / p for lang, p in target.items())
    got = hours_by_lang(out, RATE)
    for lang, p in target.items():
        longest = max(u.num_samples for u in train if u.lang == lang) / RATE / 3600
        assert abs(got[lang] - p * scale) <= longest / 2 + 1e-9, (lang, got, p * scale)


@settings(database=None)
@given(train_lists(), st.floats(0.0, 1.0), st.integers(0, 2**16))
def test_balanced_list_drops_nothing_and_repeats_evenly(train, alpha, seed):
    """Every utterance at least once; within a language, k or k+1 times each."""
    out = Counter(u.id for u in balanced_list(train, alpha, seed, RATE))
    assert set(out) == {u.id for u in train}
    for lang in {u.lang for u in train}:
        counts = [out[u.id] for u in train if u.lang == lang]
        assert min(counts) >= 1 and max(counts) - min(counts) <= 1


@settings(database=None)
@given(train_lists(), st.integers(0, 2**16))
def test_balanced_list_alpha_one_is_the_input(train, seed):
    assert balanced_list(train, 1.0, seed, RATE) == train


# ---------------------------------------------------------------- MFCC batching
@settings(max_examples=25, deadline=None, database=None)
@given(st.lists(st.integers(400, 8000), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_mfcc_batch_equals_one_at_a_time(lengths, seed):
    rng = np.random.default_rng(seed)
    waveforms = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in lengths]
    batch = mfcc_batch(waveforms)
    single = [mfcc(w) for w in waveforms]
    assert len(batch) == len(single)
    for n, b, s in zip(lengths, batch, single):
        assert b.shape == s.shape == (MfccExtractor().num_frames(n), MFCC_DIM)
        np.testing.assert_allclose(b, s, rtol=0, atol=2e-5)


# ---------------------------------------------------------------- label lengths and rates
def test_hubert_conv_spec_is_fairseqs():
    assert CONV_KERNELS_STRIDES == HUBERT_CONV
    assert math.prod(s for _, s in HUBERT_CONV) == 320


@settings(database=None)
@given(st.integers(400, 2_000_000))
def test_mfcc_frames_match_audio_within_tolerance(n):
    frames = MfccExtractor().num_frames(n)
    assert frames >= 1
    assert abs(n / RATE - frames / 100.0) <= TOLERANCE_S


@settings(database=None)
@given(st.integers(400, 2_000_000))
def test_hubert_frames_match_audio_within_tolerance(n):
    frames = conv_frames(n, HUBERT_CONV)
    assert frames >= 1
    assert abs(n / RATE - frames / 50.0) <= TOLERANCE_S


def _frames(lengths: list[int]) -> tuple[list[int], list[int]]:
    return [MfccExtractor().num_frames(n) for n in lengths], [conv_frames(n, HUBERT_CONV) for n in lengths]


lengths_st = st.lists(st.integers(8000, 2_000_000), min_size=1, max_size=20)  # >= 0.5 s (corpus.min_seconds)


@settings(database=None)
@given(lengths_st)
def test_estimate_frame_rate_within_one_hz_from_half_a_second(lengths):
    # Both feature types give floor(x) + 1 frames, x = (seconds - 0.025) * rate, so frames - 1/2
    # is x within 1/2 frame: the estimate is off by at most rate * (L / 2) / sum(x) = L / 2 / sum(seconds - 0.025)
    # Hz, at most 0.5 / 0.475 = 1.05 Hz for utterances of 0.5 s or more. Rounded: within 1 Hz.
    mfcc_frames, hubert_frames = _frames(lengths)
    assert abs(estimate_frame_rate(mfcc_frames, lengths, RATE) - 100.0) <= 1.0
    assert abs(estimate_frame_rate(hubert_frames, lengths, RATE) - 50.0) <= 1.0


@settings(database=None)
@given(lengths_st)
def test_estimate_frame_rate_exact_when_utterances_average_over_one_second(lengths):
    # The bound above is under 1/2 Hz, so the rounding lands on the rate, once sum(seconds - 0.025)
    # exceeds one second per utterance. (Below that it can miss: 0.505 s alone gives 101 and 51.)
    if sum(n - 400 for n in lengths) <= RATE * len(lengths):
        lengths = [n + RATE for n in lengths]
    mfcc_frames, hubert_frames = _frames(lengths)
    assert estimate_frame_rate(mfcc_frames, lengths, RATE) == 100.0
    assert estimate_frame_rate(hubert_frames, lengths, RATE) == 50.0
