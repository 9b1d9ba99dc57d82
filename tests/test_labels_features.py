"""hubert.labels (features, mfcc, hubert_layers): fairseq's MFCC recipe, sharding, dumping layout,
HuBERT layer features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hubert.fairseq.formats import read_tsv, shard_paths, shard_range
from hubert.labels.features import dump_split, make_extractor, read_waveform
from hubert.labels.hubert_layers import HubertFeatureReader
from hubert.labels.mfcc import mfcc, mfcc_batch
from hubert.labels.params import FeatureConfig, feature_config
from hubert.params import from_dict
from tests._labels_fixtures import make_tiny_checkpoint
from tests.testdata import LIBRI_CLIP as CLIP


def recipe_mfcc(wav: np.ndarray) -> np.ndarray:
    """fairseq examples/hubert/simple_kmeans/dump_mfcc_feature.py, written out plainly."""
    import torchaudio

    x = torch.from_numpy(wav).float().view(1, -1)
    m = torchaudio.compliance.kaldi.mfcc(waveform=x, sample_frequency=16000, use_energy=False).transpose(0, 1)
    d = torchaudio.functional.compute_deltas(m)
    dd = torchaudio.functional.compute_deltas(d)
    return torch.cat([m, d, dd], dim=0).transpose(0, 1).contiguous().numpy()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    wav, rate = sf.read(str(CLIP), dtype="float32")
    assert rate == 16000
    return wav


def test_mfcc_on_librispeech_clip_matches_recipe(clip):
    ours = mfcc(clip)
    assert ours.shape == (1191, 39) and ours.dtype == np.float32
    assert np.abs(ours - recipe_mfcc(clip)).max() <= 1e-4


def test_mfcc_batch_equals_per_utterance_mfcc(clip, tiny_corpus):
    rng = np.random.default_rng(0)
    # lengths off the 10 ms grid, one shorter than a delta window (5 frames), one just one frame long
    waves = [clip[:23_457], clip[5_000:5_000 + 400], clip[:1_000], rng.uniform(-0.5, 0.5, 16_161).astype(np.float32),
             clip]
    for got, wav in zip(mfcc_batch(waves), waves):
        single = mfcc(wav)
        if len(single) >= 5:
            assert np.array_equal(got, single)
        else:  # a lone call on 1-4 frames runs other matmul kernels
            assert got.shape == single.shape and np.abs(got - single).max() <= 1e-4
    corpus = [sf.read(p, dtype="float32")[0] for p in sorted((tiny_corpus / "audio").rglob("*.wav"))[:12]]
    assert all(np.array_equal(a, mfcc(w)) for a, w in zip(mfcc_batch(corpus), corpus))
    assert mfcc_batch([]) == []


def test_mfcc_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mono"):
        mfcc(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="at least 400"):
        mfcc(np.zeros(399, dtype=np.float32))


@pytest.mark.parametrize("total,nshard,expected", [
    (10, 3, [(0, 3), (3, 7), (7, 10)]),
    (7, 2, [(0, 4), (4, 7)]),
    (5, 1, [(0, 5)]),
])
def test_shard_range_is_fairseqs_rule(total, nshard, expected):
    assert [shard_range(total, nshard, r) for r in range(nshard)] == expected


def test_shard_ranges_cover_every_line_once():
    for total in range(1, 40):
        for nshard in range(1, total + 1):
            covered = [i for r in range(nshard) for i in range(*shard_range(total, nshard, r))]
            assert covered == list(range(total))
    with pytest.raises(ValueError, match="lower features.nshard"):
        shard_range(2, 3, 1)
    with pytest.raises(ValueError, match="outside"):
        shard_range(10, 2, 2)


def test_feature_config_is_strict():
    assert feature_config({"iter2": {"features": {"kind": "hubert", "layer": 3}}}, "iter2").layer == 3
    with pytest.raises(KeyError, match="labels.iter3"):
        feature_config({"iter1": {}}, "iter3")
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(FeatureConfig, {"kind": "mfcc", "layers": 3})
    with pytest.raises(ValueError, match="kind=mfcc has no layers"):
        FeatureConfig(kind="mfcc", layer=6)
    with pytest.raises(ValueError, match="1-based"):
        FeatureConfig(kind="hubert", layer=0)
    with pytest.raises(ValueError, match="must be one of"):
        FeatureConfig(kind="fbank")


def _read_split(feat_dir: Path, split: str, nshard: int) -> tuple[np.ndarray, list[int]]:
    arrays, lengths = [], []
    for rank in range(nshard):
        npy, lens = shard_paths(feat_dir, split, rank, nshard)
        arrays.append(np.load(npy))
        lengths += [int(x) for x in lens.read_text().split()]
    return np.concatenate(arrays), lengths


def test_dump_split_layout_and_values(tiny_manifests, tmp_path):
    manifest = tiny_manifests / "valid.tsv"
    root, rows = read_tsv(manifest)
    cfg = FeatureConfig(nshard=3, workers=2)
    lengths = dump_split(manifest, "valid", tmp_path, cfg, 16000, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"valid_{r}_3.{ext}" for r in range(3) for ext in ("npy", "len"))
    feats, file_lengths = _read_split(tmp_path, "valid", 3)
    assert file_lengths == lengths and len(lengths) == len(rows)
    assert feats.shape == (sum(lengths), 39) and feats.dtype == np.float32
    offsets = np.cumsum([0] + lengths)
    for i, (rel, _n) in enumerate(rows):
        wav, _ = sf.read(f"{root}/{rel}", dtype="float32")
        assert np.array_equal(feats[offsets[i]: offsets[i + 1]], recipe_mfcc(wav))
    # the concatenated result does not depend on nshard or workers
    dump_split(manifest, "valid", tmp_path / "one", FeatureConfig(nshard=1, workers=1), 16000, progress=False)
    assert np.array_equal(_read_split(tmp_path / "one", "valid", 1)[0], feats)


def test_dump_rejects_a_stale_manifest(tiny_manifests, tmp_path):
    root, rows = read_tsv(tiny_manifests / "valid.tsv")
    bad = tmp_path / "valid.tsv"
    rel, n = rows[0]
    bad.write_text(f"{root}\n{rel}\t{n + 1600}\n")
    with pytest.raises(ValueError, match="manifest is stale"):
        dump_split(bad, "valid", tmp_path / "out", FeatureConfig(nshard=1, workers=1), 16000, progress=False)
    bad.write_text(f"{root}\n{rel} {n}\n")
    with pytest.raises(ValueError, match="relative/path<TAB>num_samples"):
        read_tsv(bad)


def test_submitit_jobs_write_the_same_shards_as_the_local_dump(tiny_manifests, tmp_path):
    """One submitit job per shard (local processes: what a SLURM array does across machines)
    gives byte-identical shards; a failing shard names itself and its log."""
    from hubert.labels.params import LauncherConfig

    manifest = tiny_manifests / "valid.tsv"
    local = FeatureConfig(nshard=3, workers=1)
    dump_split(manifest, "valid", tmp_path / "local", local, 16000, progress=False)
    jobs = FeatureConfig(nshard=3, workers=1, launcher=LauncherConfig(kind="submitit", cluster="local",
                                                                       folder=str(tmp_path / "logs")))
    lengths = dump_split(manifest, "valid", tmp_path / "jobs", jobs, 16000, progress=False)
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == names
    for p in (tmp_path / "local").iterdir():
        assert (tmp_path / "jobs" / p.name).read_bytes() == p.read_bytes(), p.name
    assert lengths == _read_split(tmp_path / "local", "valid", 3)[1]
    assert any((tmp_path / "logs").rglob("*_log.out"))  # each job's log where the launcher put it

    root, rows = read_tsv(manifest)
    bad = tmp_path / "bad.tsv"
    stale = f"{rows[-1][0]}\t{rows[-1][1] + 1600}\n"  # the last shard's last utterance
    bad.write_text(f"{root}\n" + "".join(f"{rel}\t{n}\n" for rel, n in rows[:-1]) + stale)
    with pytest.raises(RuntimeError, match=r"features valid shard 2/3 failed in submitit job .*logs: .*manifest is "
                                           r"stale"):
        dump_split(bad, "valid", tmp_path / "bad", jobs, 16000, progress=False)


def test_launcher_config_is_strict():
    from hubert.labels.params import LauncherConfig

    with pytest.raises(ValueError, match="launcher.kind='ray'"):
        LauncherConfig(kind="ray")
    with pytest.raises(ValueError, match="launcher.cluster='pbs'"):
        LauncherConfig(cluster="pbs")
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(FeatureConfig, {"launcher": {"partition": "gpu"}})


def test_read_waveform_rejects_wrong_rate_and_channels(make_wav, tmp_path):
    with pytest.raises(ValueError, match="8000 Hz"):
        read_waveform(make_wav(tmp_path / "a.wav", rate=8000), None, 16000)
    with pytest.raises(ValueError, match="2 channels"):
        read_waveform(make_wav(tmp_path / "b.wav", channels=2), None, 16000)


# ---------------------------------------------------------------- HuBERT layers
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def tiny_ckpt_layer_norm(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_ln.pt", extractor_mode="layer_norm",
                                normalize=True, seed=1)


def test_hubert_reader_shape_rate_and_fairseq_equality(tiny_ckpt, clip):
    from hubert.fairseq.checkpoint import load_hubert

    reader = HubertFeatureReader(tiny_ckpt, layer=1)
    assert reader.frame_rate == 50.0 and reader.receptive_field == 400 and reader.dim == 32
    feats = reader.get_feats(clip)
    assert feats.shape == (596, 32) and feats.dtype == np.float32  # the README's 596 frames for this clip
    model, _ = load_hubert(tiny_ckpt)
    with torch.inference_mode():
        direct, _ = model.extract_features(torch.from_numpy(clip)[None], mask=False, output_layer=1)
    assert np.abs(feats - direct[0].numpy()).max() <= 1e-5
    with torch.inference_mode():
        last, _ = model.extract_features(torch.from_numpy(clip)[None], mask=False, output_layer=2)
    assert np.abs(HubertFeatureReader(tiny_ckpt, layer=2).get_feats(clip) - last[0].numpy()).max() <= 1e-5


def test_hubert_reader_chunks_long_audio(tiny_ckpt, clip):
    reader = HubertFeatureReader(tiny_ckpt, layer=2, chunk_samples=64_000)
    assert reader.chunks(len(clip)) == [(0, 64_000), (64_000, 128_000), (128_000, len(clip))]
    assert reader.chunks(128_100) == [(0, 64_000), (64_000, 128_100)]  # a 100-sample tail joins its neighbour
    feats = reader.get_feats(clip)
    assert feats.shape == (reader.num_frames(len(clip)), 32)
    whole = HubertFeatureReader(tiny_ckpt, layer=2).get_feats(clip[:64_000])
    assert np.abs(feats[: len(whole)] - whole).max() <= 1e-5  # the first chunk alone, as fairseq does


def test_hubert_reader_normalises_only_when_the_task_says_so(tiny_ckpt_layer_norm, clip):
    reader = HubertFeatureReader(tiny_ckpt_layer_norm, layer=2)
    assert reader.normalize
    x = torch.from_numpy(clip[:32_000])
    with torch.inference_mode():
        ref, _ = reader.model.extract_features(torch.nn.functional.layer_norm(x, x.shape)[None], mask=False,
                                               output_layer=2)
    assert np.abs(reader.get_feats(clip[:32_000]) - ref[0].numpy()).max() <= 1e-5


def test_hubert_batches_only_where_exact(tiny_ckpt, tiny_ckpt_layer_norm, clip):
    waves = [clip[:16_000], clip[20_000:43_000], clip[50_000:58_001], clip[60_000:91_999]]
    for ckpt, batchable in [(tiny_ckpt, False), (tiny_ckpt_layer_norm, True)]:
        reader = HubertFeatureReader(ckpt, layer=2, max_batch_samples=200_000)
        assert reader.batchable is batchable
        for got, wav in zip(reader.get_feats_batch(waves), waves):
            assert np.abs(got - reader.get_feats(wav)).max() <= 1e-4


def test_hubert_reader_rejects_a_missing_layer(tiny_ckpt):
    with pytest.raises(ValueError, match="has 2 transformer layers"):
        HubertFeatureReader(tiny_ckpt, layer=3)


def test_dump_hubert_features(tiny_ckpt, tiny_manifests, tmp_path):
    cfg = FeatureConfig(kind="hubert", layer=2, nshard=2, workers=2)
    lengths = dump_split(tiny_manifests / "valid.tsv", "valid", tmp_path, cfg, 16000, tiny_ckpt, progress=False)
    feats, _ = _read_split(tmp_path, "valid", 2)
    assert feats.shape == (sum(lengths), 32)
    _, rows = read_tsv(tiny_manifests / "valid.tsv")
    assert all(abs(n / 320 - f) < 2 for (_, n), f in zip(rows, lengths))  # 50 Hz
    with pytest.raises(ValueError, match="needs --checkpoint"):
        make_extractor(cfg, 16000, None)
    with pytest.raises(ValueError, match="takes no checkpoint"):
        make_extractor(FeatureConfig(), 16000, tiny_ckpt)
