"""bench.kmeans_normalisation's feature transforms: the statistics come from the fit frames only."""

import types

import numpy as np
import pytest

from bench.kmeans_normalisation import main, normalise, score
from hubert.fairseq.formats import shard_paths, write_lengths
from hubert.labels.layers import SPLIT
from hubert.labels.params import KMeansConfig


def test_standardize_uses_the_fit_frames_statistics():
    fit = np.array([[0.0, 10.0], [2.0, 30.0]], dtype=np.float32)  # mean (1, 20), std (1, 10)
    scored = np.array([[3.0, 40.0]], dtype=np.float32)
    out = normalise(np.concatenate([fit, scored]), 2, "standardize")
    np.testing.assert_allclose(out[:2], [[-1.0, -1.0], [1.0, 1.0]], atol=1e-4)
    np.testing.assert_allclose(out[2], [2.0, 2.0], atol=1e-4)  # not re-centred on itself


def test_l2_gives_unit_frames_and_none_leaves_them():
    x = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(normalise(x, 1, "l2"), [[0.6, 0.8], [0.0, 1.0]], atol=1e-6)
    assert normalise(x, 1, "none") is x


def test_an_unknown_norm_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown norm 'cmvn'"):
        main(["--checkpoint", str(tmp_path / "absent.pt"), "--manifests", str(tmp_path), "--corpus", str(tmp_path),
              "--norms", "none,cmvn"])


def test_utterance_mean_removes_each_utterances_own_offset():
    rng = np.random.default_rng(0)
    speech = rng.normal(size=(7, 3)).astype(np.float32)
    # the same frames spoken by two "voices" that differ by a constant offset: CMN makes them equal
    feats = np.concatenate([speech[:4] + 5.0, speech[:4] - 2.0, speech[4:]])
    out = normalise(feats, 4, "utterance_mean", [4, 4, 3])
    np.testing.assert_allclose(out[:4], out[4:8], atol=1e-5)
    for start, n in ((0, 4), (4, 4), (8, 3)):
        np.testing.assert_allclose(out[start: start + n].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[8:], speech[4:] - speech[4:].mean(0), atol=1e-5)


def test_utterance_mvn_gives_unit_variance_per_utterance_and_keeps_a_constant_dimension_at_zero():
    feats = np.array([[1.0, 7.0], [3.0, 7.0], [10.0, 1.0], [20.0, 2.0], [30.0, 3.0]], dtype=np.float32)
    out = normalise(feats, 2, "utterance_mvn", [2, 3])
    np.testing.assert_allclose(out[:2], [[-1.0, 0.0], [1.0, 0.0]], atol=1e-4)  # 7, 7: constant -> 0, not nan
    np.testing.assert_allclose(out[2:].std(0), [1.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(out[2:].mean(0), [0.0, 0.0], atol=1e-5)


def test_utterance_norms_need_lengths_that_cover_the_frames():
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="needs the utterances' lengths"):
        normalise(x, 2, "utterance_mean")
    with pytest.raises(ValueError, match="summing to 5"):
        normalise(x, 2, "utterance_mvn", [2, 2])


def test_score_reports_the_shuffled_floor_beside_the_pnmi(tmp_path):
    # 4 fit + 4 scored utterances of 50 frames at 50 Hz, two phones of 0.5 s each; the features are
    # the phone plus noise, so k-means finds the phones and the shuffled labels cannot
    rng = np.random.default_rng(0)
    phone = np.repeat([0, 1], 25)
    feats = np.concatenate([np.eye(2, dtype=np.float32)[phone] * 4 + rng.normal(size=(50, 2)).astype(np.float32)
                            for _ in range(8)])
    npy, lens = shard_paths(tmp_path, SPLIT, 0, 1)
    np.save(npy, feats)
    write_lengths(lens, [50] * 8)
    meta = [types.SimpleNamespace(lang="en", alignment=[["a", 0.0, 0.5], ["b", 0.5, 1.0]])] * 8
    km = KMeansConfig(n_clusters=2, percent=-1, n_init=1)
    pnmi, toneless, floor = score(tmp_path, slice(None), [50] * 8, 4, meta, 1, 50.0, km, "none")
    assert pnmi > 0.9
    assert toneless is None  # English phones carry no tones
    assert 0.0 <= floor < 0.05
