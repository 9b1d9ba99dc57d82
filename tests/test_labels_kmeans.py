"""hubert.labels.kmeans: seeded sampling and fit, batched assignment, fairseq label files."""

from __future__ import annotations

import numpy as np
import pytest

from hubert.fairseq.formats import iter_shards, shard_paths, split_lengths, split_nshard, write_dict, write_km
from hubert.labels.features import dump_split
from hubert.labels.kmeans import assign, fit_kmeans, label_split, load_sample, sample_lines, unit_counts
from hubert.labels.params import FeatureConfig, KMeansConfig, iteration_config
from hubert.params import from_dict


def _blobs(n_per: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(5, 6))
    return np.concatenate([c + rng.normal(0, 0.5, size=(n_per, 6)) for c in centres]).astype(np.float32)


def _cfg(**kw) -> KMeansConfig:
    return KMeansConfig(**{"n_clusters": 5, "percent": -1, "n_init": 2, "batch_size": 256, **kw})


def _write_shards(feat_dir, split, per_line: list[np.ndarray], nshard: int) -> None:
    from hubert.fairseq.formats import shard_range

    for rank in range(nshard):
        s, e = shard_range(len(per_line), nshard, rank)
        npy, lens = shard_paths(feat_dir, split, rank, nshard)
        npy.parent.mkdir(parents=True, exist_ok=True)
        np.save(npy, np.concatenate(per_line[s:e]))
        lens.write_text("".join(f"{len(x)}\n" for x in per_line[s:e]))


def test_kmeans_config_defaults_are_fairseqs_and_strict():
    cfg = KMeansConfig()
    assert (cfg.init, cfg.max_iter, cfg.batch_size, cfg.tol, cfg.max_no_improvement, cfg.n_init,
            cfg.reassignment_ratio) == ("k-means++", 100, 10000, 0.0, 100, 20, 0.0)
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(KMeansConfig, {"n_cluster": 100})
    with pytest.raises(ValueError, match="percent"):
        KMeansConfig(percent=0)


def test_iteration_config_is_strict():
    it = iteration_config({"iter1": {"features": {"kind": "mfcc"}, "kmeans": {"n_clusters": 50}}}, "iter1")
    assert it.kmeans.n_clusters == 50 and it.features.kind == "mfcc"
    with pytest.raises(KeyError, match="labels.iter3"):
        iteration_config({"iter1": {}}, "iter3")
    with pytest.raises(ValueError, match="unknown key"):
        iteration_config({"iter1": {"kmean": {}}}, "iter1")


def test_sample_lines_is_seeded_and_sized_like_fairseq():
    a = sample_lines(101, 0.1, seed=3)
    assert len(a) == 11 and np.all(np.diff(a) > 0)  # ceil(101 * 0.1), distinct, sorted
    assert np.array_equal(a, sample_lines(101, 0.1, seed=3))
    assert not np.array_equal(a, sample_lines(101, 0.1, seed=4))
    assert np.array_equal(sample_lines(7, -1, seed=0), np.arange(7))


def test_fit_is_deterministic_for_a_seed():
    x = _blobs()
    a, b = fit_kmeans(x, _cfg(seed=1)), fit_kmeans(x, _cfg(seed=1))
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.random_state == 1 and a.n_init == 2 and a.reassignment_ratio == 0.0 and a.compute_labels is False
    with pytest.raises(ValueError, match="raise kmeans.percent"):
        fit_kmeans(x[:3], _cfg())


def test_assign_in_blocks_matches_brute_force_and_sklearn(monkeypatch):
    import hubert.labels.kmeans

    x = _blobs(seed=2)
    km = fit_kmeans(x, _cfg())
    monkeypatch.setattr(hubert.labels.kmeans, "ASSIGN_BLOCK", 64)  # several blocks and a short last one
    labels, dists = assign(km, x)
    brute = ((x[:, None, :].astype(np.float64) - km.cluster_centers_[None]) ** 2).sum(-1)
    assert np.array_equal(labels, brute.argmin(1))
    assert np.array_equal(labels, km.predict(x))
    assert np.allclose(dists, brute.min(1), rtol=1e-4, atol=1e-3) and (dists >= 0).all()
    with pytest.raises(ValueError, match="dim"):
        assign(km, x[:, :3])


def test_faiss_backend_is_seeded_finds_the_clusters_and_pickles_as_centroids(tmp_path):
    import joblib
    from sklearn.metrics import adjusted_rand_score

    x = _blobs(seed=3)
    truth = np.repeat(np.arange(5), 200)
    a, b = fit_kmeans(x, _cfg(backend="faiss", seed=1)), fit_kmeans(x, _cfg(backend="faiss", seed=1))
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert not np.array_equal(a.cluster_centers_, fit_kmeans(x, _cfg(backend="faiss", seed=2)).cluster_centers_)
    labels, dists = assign(a, x)
    brute = ((x[:, None, :].astype(np.float64) - a.cluster_centers_[None]) ** 2).sum(-1)
    assert np.array_equal(labels, brute.argmin(1)) and np.allclose(dists, brute.min(1), rtol=1e-4, atol=1e-3)
    # the same partition as sklearn's on well-separated blobs
    sk = fit_kmeans(x, _cfg(seed=1))
    assert adjusted_rand_score(truth, labels) == 1.0 and adjusted_rand_score(truth, sk.predict(x)) == 1.0
    joblib.dump(a, tmp_path / "km.joblib")
    back = joblib.load(tmp_path / "km.joblib")
    assert back.__getstate__().keys() == {"cluster_centers_"}  # no faiss index in the pickle
    assert np.array_equal(back.predict(x), labels)


def test_unknown_kmeans_backend_is_refused():
    with pytest.raises(ValueError, match="kmeans.backend='scipy': use one of sklearn, faiss"):
        KMeansConfig(backend="scipy")


def test_label_split_keeps_lines_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    per_line = [rng.normal(size=(n, 4)).astype(np.float32) for n in (3, 5, 1, 7, 2)]
    _write_shards(tmp_path, "train", per_line, nshard=2)
    km = fit_kmeans(np.concatenate(per_line), _cfg(n_clusters=3))
    got = label_split(tmp_path, "train", km, progress=False)
    assert [len(x) for x in got.labels] == [3, 5, 1, 7, 2]
    for line, x in zip(got.labels, per_line):
        assert np.array_equal(line, assign(km, x)[0])
    assert got.frames == 18
    assert got.sq_dist_sum == pytest.approx(sum(assign(km, x)[1].sum() for x in per_line), rel=1e-5)
    assert split_lengths(tmp_path, "train") == [3, 5, 1, 7, 2]


def test_sample_and_labels_do_not_depend_on_nshard(tiny_manifests, tmp_path):
    for nshard in (1, 3):
        dump_split(tiny_manifests / "valid.tsv", "valid", tmp_path / str(nshard),
                   FeatureConfig(nshard=nshard, workers=1), 16000, progress=False)
    a = load_sample(tmp_path / "1", "valid", 0.5, seed=0)
    b = load_sample(tmp_path / "3", "valid", 0.5, seed=0)
    assert np.array_equal(a, b)
    km = fit_kmeans(a, _cfg(n_clusters=8))
    la = label_split(tmp_path / "1", "valid", km, progress=False).labels
    lb = label_split(tmp_path / "3", "valid", km, progress=False).labels
    assert all(np.array_equal(x, y) for x, y in zip(la, lb)) and len(la) == len(lb)


def test_stale_or_partial_shards_are_errors(tmp_path):
    x = [np.zeros((2, 3), dtype=np.float32)] * 4
    with pytest.raises(FileNotFoundError, match="run the features stage"):
        split_nshard(tmp_path, "train")
    _write_shards(tmp_path, "train", x, nshard=2)
    _write_shards(tmp_path, "train", x, nshard=4)
    with pytest.raises(ValueError, match="several nshard"):
        split_nshard(tmp_path, "train")
    for p in tmp_path.glob("train_*_4.*"):
        p.unlink()
    shard_paths(tmp_path, "train", 1, 2)[0].unlink()
    with pytest.raises(FileNotFoundError, match=r"shard\(s\) \[1\] of 2 missing"):
        split_nshard(tmp_path, "train")
    _write_shards(tmp_path, "train", x, nshard=2)
    shard_paths(tmp_path, "train", 0, 2)[1].write_text("2\n")
    with pytest.raises(ValueError, match="truncated or stale"):
        list(iter_shards(tmp_path, "train"))


def test_label_files_are_written_whole(tmp_path):
    labels = [np.array([0, 2, 2]), np.array([1])]
    write_km(tmp_path / "train.km", labels)
    assert (tmp_path / "train.km").read_text() == "0 2 2\n1\n"
    counts = unit_counts(labels, 4)
    assert counts.tolist() == [1, 1, 2, 0]
    for _ in range(2):  # a re-run rewrites, never appends (fairseq README's `>>` trap)
        write_dict(tmp_path / "dict.km.txt", counts)
    assert (tmp_path / "dict.km.txt").read_text() == "0 1\n1 1\n2 2\n3 0\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_float16_features_are_stored_half_size_and_read_back_as_float32(tiny_manifests, tmp_path):
    for dtype in ("float32", "float16"):
        dump_split(tiny_manifests / "valid.tsv", "valid", tmp_path / dtype,
                   FeatureConfig(nshard=1, workers=1, dtype=dtype), 16000, progress=False)
    full = np.load(tmp_path / "float32" / "valid_0_1.npy")
    half = np.load(tmp_path / "float16" / "valid_0_1.npy")
    assert half.dtype == np.float16 and half.nbytes * 2 == full.nbytes
    assert np.allclose(half.astype(np.float32), full, rtol=1e-3, atol=0.1)  # float16's 11-bit mantissa
    sample = load_sample(tmp_path / "float16", "valid", -1, seed=0)
    assert sample.dtype == np.float32 and sample.shape == full.shape
    km = fit_kmeans(full, _cfg(n_clusters=8))
    same = (assign(km, full)[0] == assign(km, half)[0]).mean()
    assert same > 0.99  # the same centroids label float16 features almost exactly alike
    with pytest.raises(ValueError, match="features.dtype"):
        FeatureConfig(dtype="int8")
