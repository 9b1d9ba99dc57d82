"""pretrain.hardware.precision bf16 on the CPU: HubertModel under bf16 autocast
(hubert.fairseq.cpu_autocast), the params and config that ask for it, and a
tiny pretraining run through the stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hubert.fairseq import cpu_autocast
from hubert.pretrain.params import CPU_AUTOCAST_ENV, HardwareParams, cpu_has_bf16
from tests._pretrain_fixtures import make_clone, run_stage


def small_model(cls):
    from fairseq.data.dictionary import Dictionary
    from fairseq.models.hubert.hubert import HubertConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

    torch.manual_seed(0)
    d = Dictionary()
    for i in range(20):
        d.add_symbol(str(i))
    cfg = HubertConfig(conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2", encoder_layers=2,
                       encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=2, final_dim=16,
                       conv_pos=16, conv_pos_groups=4, label_rate=50, dropout=0.0, attention_dropout=0.0,
                       dropout_input=0.0, dropout_features=0.0, encoder_layerdrop=0.0)
    return cls(cfg, HubertPretrainingConfig(label_rate=50, sample_rate=16000), [d])


@pytest.fixture(scope="module")
def classes():
    from fairseq.models.hubert.hubert import HubertModel

    # the plugin's seeded masking: both models draw the same masks from torch's seed
    import hubert.fairseq.hubert_dvc_plugin  # noqa: F401

    class Autocast(HubertModel):  # a subclass: fairseq's own class stays unpatched in this process
        pass

    cpu_autocast.patch(Autocast)
    return HubertModel, Autocast


def masked_loss(model, seed: int = 0):
    torch.manual_seed(seed)
    audio = torch.randn(2, 16000)
    labels = torch.randint(0, 20, (2, 50))
    out = model(audio, target_list=[labels], padding_mask=torch.zeros_like(audio, dtype=torch.bool), mask=True)
    logits, targets = model.get_logits(out, True)[0], model.get_targets(out, True)[0]
    return F.cross_entropy(logits, targets), out, logits


def test_forward_under_autocast_gives_fp32_logits_close_to_fp32(classes):
    plain_class, autocast_class = classes
    plain, mixed = small_model(plain_class), small_model(autocast_class)
    mixed.load_state_dict(plain.state_dict())
    loss32, _, _ = masked_loss(plain)
    loss16, out, logits = masked_loss(mixed)
    assert logits.dtype == torch.float32 and out["features_pen"].dtype == torch.float32
    assert math.isfinite(loss16.item())
    # same weights, same masks: bf16 matrix products move the loss a little, not a lot
    assert loss16.item() == pytest.approx(loss32.item(), rel=0.02)
    assert loss16.item() != loss32.item()  # the products really ran in bf16


def test_backward_keeps_fp32_weights_and_gradients(classes):
    _, autocast_class = classes
    model = small_model(autocast_class)
    loss, out, _ = masked_loss(model)
    (loss + 10 * out["features_pen"]).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert model.mask_emb.dtype == torch.float32 and model.mask_emb.grad is not None


def test_unpatched_fairseq_fails_under_autocast(classes):
    """Why the patch exists: fairseq's apply_mask writes the fp32 mask embedding into bf16 features."""
    plain_class, _ = classes
    model = small_model(plain_class)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RuntimeError):
        masked_loss(model)


def test_only_the_environment_turns_it_on(monkeypatch):
    class Target:
        forward = apply_mask = compute_nce = staticmethod(lambda *a, **k: None)

    monkeypatch.delenv(CPU_AUTOCAST_ENV, raising=False)
    assert cpu_autocast.enable_if_asked(Target) is False and not hasattr(Target, "_hubert_dvc_autocast")
    monkeypatch.setenv(CPU_AUTOCAST_ENV, "fp16")
    with pytest.raises(ValueError, match="only CPU autocast is bf16"):
        cpu_autocast.enable_if_asked(Target)
    monkeypatch.setenv(CPU_AUTOCAST_ENV, "bf16")
    assert cpu_autocast.enable_if_asked(Target) is True and Target._hubert_dvc_autocast


def test_params_and_config():
    from hubert.pretrain.config import config_header

    cpu = HardwareParams(gpus=0, precision="bf16", num_workers=0)
    assert cpu.cpu_autocast
    assert not HardwareParams(gpus=8, precision="bf16", num_workers=0).cpu_autocast
    assert not HardwareParams(gpus=0, precision="fp32", num_workers=0).cpu_autocast
    with pytest.raises(ValueError, match="fp16 needs GPUs.*bf16"):
        HardwareParams(gpus=0, precision="fp16", num_workers=0)
    assert f"{CPU_AUTOCAST_ENV}=bf16 fairseq-hydra-train" in config_header("data/pretrain/iter1", cpu)


@pytest.mark.slow
def test_tiny_pretraining_in_bf16_on_the_cpu(tmp_path, tiny_corpus, tiny_manifests):
    clone = make_clone(tmp_path / "repo", tiny_corpus, tiny_manifests,
                       overrides=["pretrain.hardware.precision=bf16"])
    code, out = run_stage(clone)
    assert code == 0, out[-3000:]
    assert "runs under bf16 autocast on the CPU" in out  # the plugin says so in the training log
    config = (clone / "data/pretrain/iter1/fairseq_config.yaml").read_text()
    assert "bf16: false" in config and f"{CPU_AUTOCAST_ENV}=bf16" in config
    metrics = json.loads((clone / "metrics/pretrain_iter1.json").read_text())
    assert metrics["training"]["updates"] == 40 and math.isfinite(metrics["loss_m"]["last"])
    assert (Path(clone) / "data/pretrain/iter1/checkpoint.pt").exists()


@pytest.mark.slow
def test_an_fp32_run_ignores_autocast_asked_in_the_users_environment(tmp_path, tiny_corpus, tiny_manifests,
                                                                     monkeypatch):
    monkeypatch.setenv(CPU_AUTOCAST_ENV, "bf16")  # run_stage passes the environment on
    clone = make_clone(tmp_path / "repo", tiny_corpus, tiny_manifests)
    code, out = run_stage(clone)
    assert code == 0, out[-3000:]
    assert "bf16 autocast" not in out


@pytest.mark.slow
def test_precision_auto_through_the_stage_follows_this_cpu(tmp_path, tiny_corpus, tiny_manifests):
    clone = make_clone(tmp_path / "repo", tiny_corpus, tiny_manifests, overrides=["pretrain.hardware.precision=auto"])
    code, out = run_stage(clone)
    assert code == 0, out[-3000:]
    cpuinfo = Path("/proc/cpuinfo")
    native = cpuinfo.is_file() and cpu_has_bf16(cpuinfo.read_text(errors="replace"))
    assert f"pretrain.hardware.precision=auto: {'bf16' if native else 'fp32'} (" in out
    # the decision is in the config the stage writes: the autocast variable in its launch line, or not
    config = (clone / "data/pretrain/iter1/fairseq_config.yaml").read_text()
    assert (f"{CPU_AUTOCAST_ENV}=bf16" in config) == native
    assert ("runs under bf16 autocast on the CPU" in out) == native
