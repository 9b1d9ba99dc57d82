"""bench.kmeans_normalisation's feature transforms: the statistics come from the fit frames only."""

import numpy as np
import pytest

from bench.kmeans_normalisation import main, normalise


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
