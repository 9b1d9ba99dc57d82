"""hubert.fairseq.checkpoint: weights_only loading with fairseq's Dictionary allowed, and nothing else."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from hubert.fairseq.checkpoint import UnsafeCheckpointError, load_hubert, safe_load
from tests._labels_fixtures import make_tiny_checkpoint


class _Malicious:
    """Unpickling this runs a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_safe_load_reads_a_fairseq_checkpoint(ckpt):
    from fairseq.data.dictionary import Dictionary

    state = safe_load(ckpt)
    assert set(state) >= {"cfg", "model", "task_state"}
    assert isinstance(state["task_state"]["dictionaries"][0], Dictionary)
    assert len(state["task_state"]["dictionaries"][0]) == 24  # 20 units + fairseq's 4 specials


def test_safe_load_leaves_no_process_wide_allowance(ckpt):
    safe_load(ckpt)
    assert not any("Dictionary" in str(g) for g in torch.serialization.get_safe_globals())
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)


def test_malicious_checkpoint_is_refused(ckpt, tmp_path):
    marker = tmp_path / "pwned"
    state = safe_load(ckpt)
    state["extra_state"]["payload"] = _Malicious(marker)
    evil = tmp_path / "evil.pt"
    torch.save(state, evil)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_load(evil)
    assert str(evil) in str(err.value) and "system" in str(err.value)
    with pytest.raises(UnsafeCheckpointError):
        load_hubert(evil)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        safe_load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        safe_load(junk)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a fairseq checkpoint"):
        safe_load(tmp_path / "plain.pt")


def test_load_hubert_needs_no_data_dirs(ckpt):
    model, task_cfg = load_hubert(ckpt)
    assert not model.training
    assert task_cfg.data == "/nonexistent/manifests" and not os.path.exists(task_cfg.data)
    assert task_cfg.sample_rate == 16000 and task_cfg.normalize is False
    assert model.label_embs_concat.shape[0] == 24


def test_load_hubert_without_task_state_sizes_dictionaries_from_weights(ckpt, tmp_path):
    bare = make_tiny_checkpoint(tmp_path / "bare.pt", task_state=False)
    model, _ = load_hubert(bare)
    reference, _ = load_hubert(ckpt)
    x = torch.randn(1, 8000)
    with torch.inference_mode():
        a = model.extract_features(x, output_layer=2)[0]
        assert torch.equal(a, reference.extract_features(x, output_layer=2)[0])


def test_load_hubert_rejects_other_models(ckpt, tmp_path):
    state = safe_load(ckpt)
    state["cfg"]["model"]["_name"] = "wav2vec2"
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(ValueError, match="model type 'wav2vec2'"):
        load_hubert(other)


def test_fairseqs_own_loader_reads_it_with_the_same_allow_list(ckpt):
    """The checkpoint layout is fairseq's: its loader accepts it under the same allow-list."""
    from fairseq import checkpoint_utils

    from hubert.fairseq.checkpoint import allowed_globals

    with torch.serialization.safe_globals(allowed_globals()):
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)])
    ours, _ = load_hubert(ckpt)
    x = torch.randn(1, 8000)
    with torch.inference_mode():
        a = models[0].eval().extract_features(x, output_layer=1)[0]
        b = ours.extract_features(x, output_layer=1)[0]
    assert torch.equal(a, b)
