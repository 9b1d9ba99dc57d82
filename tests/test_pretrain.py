"""hubert.pretrain and hubert.fairseq.launcher without training: params, config, batch arithmetic, log
parsing, the loss check, the resume decision, metrics; and the fairseq plugin."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hubert.fairseq.checkpoint import checkpoint_updates
from hubert.fairseq.formats import write_whole
from hubert.fairseq.launcher import (
    LAST,
    LOG_FILE,
    RUN_FILE,
    SET_ASIDE,
    Record,
    Resume,
    RunRejected,
    TrainingError,
    config_yaml,
    detach_links,
    parse_log_line,
    plugin_dir,
    portable_path,
    prepare_save_dir,
    read_log,
)
from hubert.labels.quality import chance_bits
from hubert.pretrain.config import (
    LabelSet,
    config_header,
    describe_batch,
    effective_batch,
    fairseq_config,
    read_label_set,
    run_identity,
)
from hubert.pretrain.metrics import LossSanityError, check_first_loss, final_metrics, plot_values, record_check, verdict
from hubert.pretrain.params import (
    ITERATIONS,
    BatchParams,
    HardwareParams,
    ModelParams,
    PretrainParams,
    check_devices,
    cpu_has_bf16,
    iteration_params,
    resolve_precision,
)
from tests._pretrain_fixtures import compose_params

REPO = Path(__file__).resolve().parent.parent


def section(profile: str, *overrides: str) -> dict:
    return yaml.safe_load(compose_params([f"profile={profile}", *overrides]))["pretrain"]


def params(profile: str = "tiny", *overrides: str) -> PretrainParams:
    return iteration_params(section(profile, *overrides), "iter1")


def config(p: PretrainParams, **kw) -> dict:
    # the demo's precision auto as a CPU without bf16 instructions decides it (fp32)
    p = dataclasses.replace(p, hardware=resolve_precision(p.hardware, cpuinfo=None))
    args = dict(manifests="data/manifests", labels="data/labels/iter1", label_rate=100.0,
                save_dir="data/pretrain/iter1/checkpoints", sample_rate=16000,
                user_dir="hubert/fairseq/hubert_dvc_plugin")
    args.update(kw)
    return fairseq_config(p, **args)


# ---------------------------------------------------------------- params
@pytest.mark.parametrize("profile", ["tiny", "demo", "base"])
def test_every_profile_builds_both_iterations(profile):
    for iteration in ITERATIONS:
        p = iteration_params(section(profile), iteration)
        assert isinstance(p.model, ModelParams) and p.optimization.max_update > 0


def test_cnn_widths_per_layer_keep_the_hop():
    p = params("demo", "pretrain.model.conv_channels=[32,64,64,128,128,128,128]")
    layers = ast.literal_eval(p.model.conv_feature_layers())
    assert [c for c, _, _ in layers] == [32, 64, 64, 128, 128, 128, 128]
    assert [(k, s) for _, k, s in layers] == [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2  # the 320-sample hop
    with pytest.raises(ValueError, match="one per CNN layer"):
        params("demo", "pretrain.model.conv_channels=[32,64]")


def test_pre_ln_and_tri_stage_reach_fairseqs_config():
    p = params("demo", "pretrain.model.layer_norm_first=true", "pretrain.optimization.lr_scheduler=tri_stage",
               "pretrain.optimization.phase_ratio=[0.05,0.45,0.5]", "pretrain.optimization.final_lr_scale=0.1")
    cfg = config(p)
    assert cfg["model"]["layer_norm_first"] is True
    assert cfg["lr_scheduler"] == {"_name": "tri_stage", "phase_ratio": [0.05, 0.45, 0.5], "init_lr_scale": 0.01,
                                   "final_lr_scale": 0.1}
    assert config(params("demo"))["lr_scheduler"] == {"_name": "polynomial_decay", "warmup_updates": 50}
    assert run_identity(cfg, [])["model.layer_norm_first"] == "true"  # a post-LN checkpoint is not continued
    with pytest.raises(ValueError, match="phase_ratio"):
        params("demo", "pretrain.optimization.phase_ratio=[0.5,0.5,0.5]")
    with pytest.raises(ValueError, match="lr_scheduler"):
        params("demo", "pretrain.optimization.lr_scheduler=cosine")


def test_demo_profile_is_the_measured_cpu_model():
    p = params("demo")
    m = p.model
    assert (m.encoder_layers, m.encoder_embed_dim, m.encoder_ffn_embed_dim, m.final_dim) == (4, 256, 1024, 64)
    # narrow early CNN layers, the HuBERT kernels and strides (320-sample hop)
    assert ast.literal_eval(m.conv_feature_layers()) == [(32, 10, 5), (64, 3, 2), (64, 3, 2), (128, 3, 2),
                                                          (128, 3, 2), (128, 2, 2), (128, 2, 2)]
    assert (p.optimization.lr, p.optimization.warmup_updates, p.optimization.max_update) == (5e-4, 50, 8000)
    assert (p.batch.max_tokens, p.batch.max_sample_size) == (320000, 64000)
    assert (p.hardware.gpus, p.hardware.precision) == (0, "auto")
    # on a CPU with bf16 instructions auto is bf16 autocast: fairseq trains fp32 around it
    h = resolve_precision(p.hardware, cpuinfo="flags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile")
    assert (h.precision, h.cpu_autocast) == ("bf16", True)
    cfg = config(dataclasses.replace(p, hardware=h))
    assert cfg["common"]["bf16"] is False and cfg["common"]["cpu"] is True


def test_base_profile_is_fairseqs_recipe_with_the_papers_iteration_1_and_the_reference_batch():
    iter1, iter2 = (iteration_params(section("base"), it) for it in ITERATIONS)
    for p in (iter1, iter2):
        m = p.model
        assert (m.conv_channels, m.encoder_layers, m.encoder_embed_dim, m.final_dim) == (512, 12, 768, 256)
        assert (m.mask_prob, m.feature_grad_mult, m.untie_final_proj) == (0.8, 0.1, True)
        assert p.batch.max_tokens == 1_400_000 and p.hardware.precision == "fp16"
        assert p.optimization.warmup_updates == 32000 and p.optimization.lr == 5e-4
        assert effective_batch(p.hardware, p.batch, 16000)["ratio_to_reference"] == pytest.approx(1.0)
    assert (iter1.optimization.max_update, iter2.optimization.max_update) == (250_000, 400_000)


def test_the_questions_config_is_an_experiment_on_top_of_the_recipe():
    iter1, iter2 = (iteration_params(section("base", "experiment=question"), it) for it in ITERATIONS)
    for p in (iter1, iter2):
        assert (p.optimization.lr, p.optimization.max_update, p.hardware.precision) == (2.5e-4, 400_000, "fp16")
        assert p.model.mask_prob == 0.8


def test_iteration_block_overrides_only_its_iteration():
    s = section("tiny", "pretrain.iter2.hardware.num_workers=3", "pretrain.iter2.optimization.max_update=7")
    one, two = iteration_params(s, "iter1"), iteration_params(s, "iter2")
    assert (one.hardware.num_workers, one.optimization.max_update) == (0, 40)
    assert (two.hardware.num_workers, two.optimization.max_update) == (3, 7)
    assert two.model == one.model


def test_unknown_keys_are_errors():
    s = section("tiny")
    with pytest.raises(ValueError, match=r"pretrain.iter1.model.mask_probb"):
        iteration_params({**s, "iter1": {"model": {"mask_probb": 0.5}}}, "iter1")
    with pytest.raises(ValueError, match="unknown key"):
        iteration_params({**s, "model": {**s["model"], "dropuot": 0.1}}, "iter1")
    with pytest.raises(ValueError, match="unknown iteration"):
        iteration_params(s, "iter3")


@pytest.mark.parametrize("block,change,message", [
    ("hardware", {"gpus": 0, "precision": "fp16"}, "needs GPUs"),
    ("hardware", {"precision": "fp8"}, "fp32, fp16, bf16"),
    ("batch", {"max_tokens": 1000}, "one cropped clip would not fit"),
    ("batch", {"update_freq": 0}, "update_freq"),
    ("model", {"encoder_attention_heads": 3}, "must divide encoder_embed_dim"),
    ("optimization", {"warmup_updates": 40}, "warmup_updates"),
    ("schedule", {"log_interval": 0}, "log_interval"),
])
def test_bad_values_are_rejected_with_the_key(block, change, message):
    s = section("tiny")
    with pytest.raises(ValueError, match=message):
        iteration_params({**s, block: {**s[block], **change}}, "iter1")


# ---------------------------------------------------------------- config
def test_config_is_complete_relative_and_carries_the_label_set():
    p = params("tiny")
    cfg = config(p, label_rate=50.0)
    assert cfg["task"]["label_rate"] == cfg["model"]["label_rate"] == 50.0
    assert (cfg["task"]["data"], cfg["task"]["label_dir"], cfg["task"]["labels"]) == \
        ("data/manifests", "data/labels/iter1", ["km"])
    assert cfg["checkpoint"]["save_dir"] == "data/pretrain/iter1/checkpoints"
    assert cfg["common"]["user_dir"] == "hubert/fairseq/hubert_dvc_plugin"
    assert cfg["hydra"] == {"run": {"dir": "."}, "output_subdir": None}
    assert cfg["common"]["cpu"] is True and cfg["distributed_training"]["distributed_world_size"] == 1
    assert cfg["common"]["seed"] == p.seed and cfg["common"]["log_format"] == "json"
    assert cfg["dataset"]["required_batch_size_multiple"] == 1
    assert ast.literal_eval(cfg["model"]["conv_feature_layers"]) == [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
    assert cfg["model"]["final_dim"] == p.model.final_dim and "conv_channels" not in cfg["model"]
    assert cfg["optimizer"]["adam_betas"] == "(0.9,0.98)"
    assert cfg["criterion"]["loss_weights"] == [p.loss.features_pen_weight]
    text = config_yaml(cfg, config_header("data/pretrain/iter1"))
    assert yaml.safe_load(text) == cfg
    assert "/work" not in text and "/tmp" not in text


def test_every_config_key_exists_in_fairseqs_schema():
    """Keys fairseq does not know are errors (or need `++`): the generated config uses none."""
    from fairseq.criterions.hubert_criterion import HubertCriterionConfig
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.hubert.hubert import HubertConfig
    from fairseq.optim.adam import FairseqAdamConfig
    from fairseq.optim.lr_scheduler.polynomial_decay_schedule import PolynomialDecayLRScheduleConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

    schemas = {"task": HubertPretrainingConfig, "model": HubertConfig, "criterion": HubertCriterionConfig,
               "optimizer": FairseqAdamConfig, "lr_scheduler": PolynomialDecayLRScheduleConfig}
    top = typing.get_type_hints(FairseqConfig)
    tiny, base = config(params("tiny")), config(params("base"))  # CPU and GPU settings
    assert "data_buffer_size" in tiny["dataset"] and "data_buffer_size" not in base["dataset"]
    for cfg in (tiny, base):
        for group, values in cfg.items():
            if group in ("defaults", "hydra"):
                continue
            schema = schemas.get(group) or top[group]
            names = {f.name for f in dataclasses.fields(schema)}
            unknown = set(values) - names - {"_name"}
            assert not unknown, f"{group}: {unknown}"


@pytest.mark.parametrize("precision,flags", [("fp32", (False, False)), ("fp16", (True, False)),
                                             ("bf16", (False, True))])
def test_precision_and_gpus_reach_fairseq(precision, flags):
    s = section("base")
    p = iteration_params({**s, "hardware": {**s["hardware"], "gpus": 4, "precision": precision}}, "iter1")
    cfg = config(p)
    assert (cfg["common"]["fp16"], cfg["common"]["bf16"]) == flags
    assert cfg["common"]["cpu"] is False
    assert cfg["distributed_training"]["distributed_world_size"] == 4
    assert cfg["optimization"]["update_freq"] == [p.batch.update_freq]


def test_portable_path_is_relative_inside_the_root_only(tmp_path):
    assert portable_path(tmp_path / "data" / "x", tmp_path) == "data/x"
    assert portable_path("data/x", Path.cwd()) == "data/x"
    assert portable_path("/elsewhere/y", tmp_path) == "/elsewhere/y"
    assert plugin_dir(REPO) == "hubert/fairseq/hubert_dvc_plugin"


def test_precision_auto_is_what_the_machine_computes_natively(capsys):
    cpu = params("demo").hardware
    avx2 = "flags\t\t: fpu sse avx2 fma"
    assert resolve_precision(cpu, cpuinfo=avx2).precision == "fp32"  # torch would emulate bf16: many times slower
    assert "fp32 (this CPU lists none of avx512_bf16, amx_bf16" in capsys.readouterr().out
    assert resolve_precision(cpu, cpuinfo=avx2 + " avx512f avx512_bf16").cpu_autocast
    assert resolve_precision(cpu, cpuinfo="flags : amx_bf16").precision == "bf16"
    assert resolve_precision(cpu, cpuinfo=None).precision == "fp32"  # no /proc/cpuinfo (macOS): the safe choice
    gpus = dataclasses.replace(cpu, gpus=4)
    assert resolve_precision(gpus, cpuinfo=None, cuda_bf16=True).precision == "bf16"
    assert resolve_precision(gpus, cpuinfo=None, cuda_bf16=False).precision == "fp16"
    explicit = params("tiny").hardware
    assert resolve_precision(explicit, cpuinfo="flags : amx_bf16") is explicit  # only auto is decided
    assert capsys.readouterr().out.count("precision=auto") == 5
    # this machine: check_devices decides it from its own /proc/cpuinfo
    decided = check_devices(cpu).precision
    cpuinfo = Path("/proc/cpuinfo")
    assert decided == ("bf16" if cpuinfo.is_file() and cpu_has_bf16(cpuinfo.read_text(errors="replace")) else "fp32")


def test_precision_auto_on_gpus_asks_for_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    # a V100 or T4: bf16 only by emulation, which torch's default check counts as support
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    base = params("base", "pretrain.hardware.precision=auto").hardware
    assert check_devices(base).precision == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100, H100
    assert check_devices(base).precision == "bf16"


def test_a_fairseq_config_needs_a_decided_precision():
    for cfg in (section("demo"), section("base", "pretrain.hardware.precision=auto")):
        with pytest.raises(ValueError, match="precision=auto is decided on the machine that trains"):
            fairseq_config(iteration_params(cfg, "iter1"), manifests="m", labels="l", label_rate=50.0, save_dir="s",
                           sample_rate=16000, user_dir="u")


def test_devices_are_checked_before_launching():
    assert check_devices(params("tiny").hardware) == params("tiny").hardware  # CPU, fp32: nothing to decide
    if torch.cuda.device_count() < 8:
        with pytest.raises(ValueError, match="hardware.gpus=8"):
            check_devices(params("base").hardware)


# ---------------------------------------------------------------- batch arithmetic
def test_effective_batch_against_the_reference():
    h = HardwareParams(gpus=4, precision="fp16", num_workers=6)
    b = BatchParams(max_tokens=1_400_000, update_freq=1, max_sample_size=250000, min_sample_size=32000)
    four = effective_batch(h, b, 16000)
    assert four["ratio_to_reference"] == pytest.approx(1 / 8)  # 4 GPUs are 1/8 of fairseq's reference batch
    assert four["reference_hours_per_update"] == pytest.approx(32 * 1.4e6 / 16000 / 3600)
    assert four["hours_per_update"] == pytest.approx(4 * 1.4e6 / 16000 / 3600)
    eight = effective_batch(h, dataclasses.replace(b, update_freq=8), 16000)
    assert eight["ratio_to_reference"] == pytest.approx(1.0)  # ... and update_freq 8 restores it
    cpu = effective_batch(HardwareParams(0, "fp32", 0), dataclasses.replace(b, max_tokens=320000), 16000)
    assert cpu["workers"] == 1 and cpu["hours_per_update"] == pytest.approx(20 / 3600)
    assert "1/8 of it" in describe_batch(four)


# ---------------------------------------------------------------- log records
FAIRSEQ_LINE = ('2026-11-24 02:52:09 | INFO | train_inner | {"epoch": 1, "update": 0.083, "loss": "7.544", '
                '"count_m_0": "135", "count_u_0": "150", "loss_m_0": "5.406", "loss_u_0": "5.918", '
                '"loss_features_pen": "2.138", "correct_m_0": "0.037037", "correct_u_0": "0.0133333", '
                '"ppl": "186.65", "num_updates": "1", "lr": "0.000166667", "gnorm": "3.8", "wall": "2"}')
VALID_LINE = ('[2026-11-24 02:46:14,240][valid][INFO] - {"epoch": 1, "valid_loss": "6.15", '
              '"valid_count_m_0": "143", "valid_loss_m_0": "4.975", "valid_correct_m_0": "0.0415593", '
              '"valid_num_updates": "5"}')
EPOCH_LINE = '2026-11-24 02:52:09 | INFO | train | {"epoch": 1, "train_loss": "9.806", "train_wall": "2"}'


def test_parse_log_line_reads_both_log_formats():
    tag, stats = parse_log_line(FAIRSEQ_LINE)
    assert tag == "train_inner" and stats["loss_m_0"] == 5.406 and stats["num_updates"] == 1.0
    tag, stats = parse_log_line(VALID_LINE)
    assert tag == "valid" and stats == {"epoch": 1.0, "loss": 6.15, "count_m_0": 143.0, "loss_m_0": 4.975,
                                        "correct_m_0": 0.0415593, "num_updates": 5.0}
    tag, stats = parse_log_line(EPOCH_LINE)
    assert tag == "train" and stats == {"epoch": 1.0, "loss": 9.806, "wall": 2.0}
    assert parse_log_line("2026-11-24 | INFO | fairseq.trainer | Saving checkpoint to x") is None
    assert parse_log_line("2026 | INFO | train_inner | {not json") is None


def test_plot_values_and_throughput():
    _, stats = parse_log_line(FAIRSEQ_LINE)
    first = Record("train_inner", 1, stats, train_s=2.0, audio_s=(135 + 150) * 0.02)
    second = Record("train_inner", 3, stats, train_s=3.0, audio_s=first.audio_s + 2 * 285 * 0.02)
    chance = chance_bits(100)
    v = plot_values(second, first, chance)
    assert v["loss_m"] == 5.406 and v["accuracy_m"] == 0.037037 and v["features_pen"] == 2.138
    assert v["loss_u"] == 5.918 and v["lr"] == 0.000166667 and v["gnorm"] == 3.8 and v["loss"] == 7.544
    assert v["audio_s_per_s"] == pytest.approx(2 * 285 * 0.02 / 1.0)
    assert v["loss_m_over_chance"] == pytest.approx(5.406 / math.log2(104))
    assert plot_values(first, None, chance)["audio_s_per_s"] == pytest.approx(285 * 0.02 / 2.0)
    valid = Record("valid", 5, parse_log_line(VALID_LINE)[1], 4.0, 0.0)
    assert "audio_s_per_s" not in plot_values(valid, None, chance)
    assert Record.from_json(second.to_json()) == second
    assert "loss_scale" not in v  # an fp32 run logs none
    fp16 = Record("train_inner", 5, {**stats, "loss_scale": 64.0}, 4.0, 0.0)
    assert plot_values(fp16, second, chance)["loss_scale"] == 64.0  # the report's fp16 health


# ---------------------------------------------------------------- loss check
def test_first_loss_at_chance_passes():
    assert check_first_loss(6.85, 100, 100, "d/dict.km.txt") is None  # log2(104) = 6.70, +2%
    assert check_first_loss(4.70, 20, 20, "d/dict.km.txt") is None


def test_first_loss_at_another_dictionarys_chance_is_diagnosed():
    problem = check_first_loss(9.0, 20, 500, "d/dict.km.txt")  # labels 0..19, a K=500 dictionary
    assert problem and "log2(20 + 4) = 4.585" in problem and "500 units" in problem
    assert "does not belong to these labels" in problem


def test_collapsed_first_loss_is_diagnosed():
    problem = check_first_loss(0.4, 100, 100, "d/dict.km.txt")
    assert problem and "<unk>" in problem and "empty dictionary" in problem
    assert check_first_loss(6.70 * 1.11, 100, 100, "d") and check_first_loss(6.70 * 0.89, 100, 100, "d")


LOSSLESS_LINE = ('2026-11-24 02:52:09 | INFO | train_inner | {"epoch": 1, "loss": "7.544", "count_m_0": "135", '
                 '"num_updates": "2"}')


def test_a_record_without_the_masked_loss_is_an_error_naming_its_line():
    check = record_check(LabelSet(100.0, 20, 20, 4.3), "d/dict.km.txt")
    _, stats = parse_log_line(LOSSLESS_LINE)
    for first in (True, False):  # never a NaN that a later check or a metrics file would read as a loss
        with pytest.raises(TrainingError, match=r"train_inner record at update 2 has no loss_m_0: .*count_m_0"):
            check(Record("train_inner", 2, stats, 1.0, 1.0), LOSSLESS_LINE, first)


def test_only_the_first_record_of_a_fresh_run_is_held_to_chance():
    check = record_check(LabelSet(100.0, 20, 20, 4.3), "d/dict.km.txt")
    late = Record("train_inner", 500, {"loss_m_0": 1.2}, 1.0, 1.0)
    check(late, "line", False)  # far below chance, but not the first record: a resumed run
    with pytest.raises(LossSanityError, match="stopped at update 500") as err:
        check(late, "line", True)
    assert isinstance(err.value, RunRejected)  # the launcher then discards the run's checkpoints


# ---------------------------------------------------------------- labels
def test_read_label_set(tmp_path):
    from tests._pretrain_fixtures import write_labels

    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for split in ("train", "valid"):
        (manifests / f"{split}.tsv").write_text("root\n" + "".join(f"a{i}.wav\t{16000 + 800 * i}\n"
                                                                    for i in range(6)))
    write_labels(manifests, tmp_path / "labels", units=7, dict_units=9)
    labels = read_label_set(manifests, tmp_path / "labels", 16000)
    counts = np.bincount(np.concatenate([np.array(line.split(), dtype=int) for line in
                                         (tmp_path / "labels" / "train.km").read_text().splitlines()]))
    p = counts / counts.sum()
    assert (labels.units, labels.units_in_labels, labels.label_rate) == (9, 7, 100.0)
    assert labels.prior_entropy_bits == pytest.approx(-(p * np.log2(p)).sum())
    assert labels.chance_bits == pytest.approx(math.log2(13))
    (tmp_path / "labels" / "dict.km.txt").write_text("")
    from hubert.fairseq.formats import DictionaryError

    with pytest.raises(DictionaryError, match="empty"):
        read_label_set(manifests, tmp_path / "labels", 16000)


# ---------------------------------------------------------------- resume decision
def fake_checkpoint(path: Path, updates: int) -> None:
    torch.save({"model": {}, "optimizer_history": [{"num_updates": updates}]}, path)


def write_log(save_dir: Path, steps: list[int]) -> None:
    save_dir.mkdir(parents=True, exist_ok=True)
    recs = [Record("train_inner", s, {"loss_m_0": 1.0}, float(s), float(s)) for s in steps]
    (save_dir / LOG_FILE).write_text("".join(r.to_json() + "\n" for r in recs))


IDENTITY = {"model.encoder_layers": "2", "task.labels": "['km']", "file iter1/train.km": "a" * 64}
CONFIG = {"common": {"fp16": False, "log_interval": 2}, "optimization": {"max_update": 40},
          "dataset": {"num_workers": 0}, "distributed_training": {"distributed_world_size": 1}}


def with_changes(config: dict, **changes: dict) -> dict:
    return {section: {**values, **changes.get(section, {})} for section, values in config.items()}


def killed_after(save: Path, updates: int, logged: list[int]) -> None:
    """A run that saved checkpoint_last.pt at ``updates`` and logged ``logged`` before it was killed."""
    fake_checkpoint(save / LAST, updates)
    write_log(save, logged)


def set_aside_dirs(save: Path) -> list[Path]:
    return sorted((save.parent / SET_ASIDE).iterdir()) if (save.parent / SET_ASIDE).is_dir() else []


def test_a_fresh_directory_starts_at_update_0(tmp_path):
    decision = prepare_save_dir(tmp_path / "ckpt", IDENTITY, CONFIG)
    assert decision == Resume(0, "no checkpoint: starting from update 0")
    assert json.loads((tmp_path / "ckpt" / RUN_FILE).read_text())["identity"] == IDENTITY


def test_same_run_resumes_and_cuts_the_log_back_to_the_checkpoint(tmp_path):
    save = tmp_path / "ckpt"
    prepare_save_dir(save, IDENTITY, CONFIG)
    killed_after(save, 10, [2, 4, 10, 12, 14])
    decision = prepare_save_dir(save, IDENTITY, CONFIG)
    assert decision.update == 10 and "resuming" in decision.why and "(same config and inputs)" in decision.why
    assert [r.step for r in read_log(save)] == [2, 4, 10]  # fairseq redoes 11..14
    assert set_aside_dirs(save) == []


@pytest.mark.parametrize("changes, shown", [
    ({"optimization": {"max_update": 800}}, "optimization.max_update 40 -> 800"),  # train longer
    ({"distributed_training": {"distributed_world_size": 8}}, "distributed_training.distributed_world_size 1 -> 8"),
    ({"dataset": {"num_workers": 6}}, "dataset.num_workers 0 -> 6"),
    ({"common": {"log_interval": 200}}, "common.log_interval 2 -> 200"),
])
def test_schedule_hardware_and_logging_changes_continue_from_the_checkpoint(tmp_path, changes, shown):
    save = tmp_path / "ckpt"
    prepare_save_dir(save, IDENTITY, CONFIG)
    killed_after(save, 10, [2, 4, 10])
    decision = prepare_save_dir(save, IDENTITY, with_changes(CONFIG, **changes))
    assert decision.update == 10 and shown in decision.why
    assert (save / LAST).is_file() and set_aside_dirs(save) == []


@pytest.mark.parametrize("override, key", [
    ("pretrain.optimization.lr=0.0002", "optimization.lr"), ("pretrain.model.mask_prob=0.65", "model.mask_prob"),
    ("pretrain.seed=7", "common.seed dataset.fixed_validation_seed"),
    ("pretrain.optimization.warmup_updates=500", "lr_scheduler.warmup_updates"),
    ("pretrain.batch.max_sample_size=48000", "task.max_sample_size")])
def test_a_finished_run_given_another_recipe_starts_over(override, key):
    """Only how long, where and on what hardware may change: a finished run given another learning
    rate (or masking, seed, schedule, crop) is not reported under the new params."""
    before, after = (run_identity(config(params("demo", *o)), []) for o in ((), (override,)))
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == set(key.split())
    for same in ("pretrain.optimization.max_update=16000", "pretrain.hardware.num_workers=4",
                 "pretrain.schedule.log_interval=500", "pretrain.batch.update_freq=2"):
        assert run_identity(config(params("demo", same)), []) == before, same


def test_precision_fp16_and_bf16_continue_each_other_but_not_fp32():
    """fairseq keeps Adam's state in FairseqAdam (fp32) or FP16Optimizer (fp16, bf16) and refuses
    the other's; its reset_optimizer would also restart the update count, so fp32 <-> half starts over."""
    def identity(precision: str) -> dict[str, str]:
        gpus = "0" if precision == "fp32" else "1"
        cfg = config(params("demo", f"pretrain.hardware.gpus={gpus}", f"pretrain.hardware.precision={precision}"))
        return run_identity(cfg, [])

    assert identity("fp16") == identity("bf16")
    assert identity("fp32")["precision"] == "fp32" and identity("fp16")["precision"] == "fp16/bf16"


def test_a_log_line_cut_short_is_dropped_and_a_damaged_log_is_named(tmp_path, capsys):
    save = tmp_path / "ckpt"
    write_log(save, [2, 4])
    with open(save / LOG_FILE, "a") as f:
        f.write('{"tag": "train_inner", "step": 6, "sta')
    assert [r.step for r in read_log(save)] == [2, 4]
    assert "cut short" in capsys.readouterr().out
    (save / LOG_FILE).write_text("garbage\n" + (save / LOG_FILE).read_text())
    with pytest.raises(ValueError, match="train_log.jsonl:1: not a training-log record"):
        read_log(save)


@pytest.mark.parametrize("key, value", [("model.encoder_layers", "4"), ("file iter1/train.km", "b" * 64),
                                        ("task.labels", "['km', 'ltr']")])
def test_a_checkpoint_of_another_model_or_other_data_is_set_aside_never_deleted(tmp_path, key, value):
    save = tmp_path / "ckpt"
    prepare_save_dir(save, IDENTITY, CONFIG)
    killed_after(save, 10, [2, 4, 10])
    decision = prepare_save_dir(save, {**IDENTITY, key: value}, CONFIG)
    assert decision.update == 0 and f"changed: {key}" in decision.why and "set aside in" in decision.why
    (kept,) = set_aside_dirs(save)
    assert kept.name.startswith("001-") and checkpoint_updates(kept / LAST) == 10
    assert key in (kept / "REASON.txt").read_text() and [r.step for r in read_log(kept)] == [2, 4, 10]
    assert not (save / LAST).exists() and read_log(save) == []
    assert json.loads((save / RUN_FILE).read_text())["identity"][key] == value
    killed_after(save, 4, [2, 4])
    prepare_save_dir(save, IDENTITY, CONFIG)  # and back: a second set-aside folder, the first untouched
    assert [d.name[:4] for d in set_aside_dirs(save)] == ["001-", "002-"]


def test_checkpoint_without_its_training_log_is_set_aside(tmp_path):
    save = tmp_path / "ckpt"
    prepare_save_dir(save, IDENTITY, CONFIG)
    fake_checkpoint(save / LAST, 10)
    decision = prepare_save_dir(save, IDENTITY, CONFIG)
    assert decision.update == 0 and "train_log.jsonl is missing" in decision.why
    assert not (save / LAST).exists() and (set_aside_dirs(save)[0] / LAST).is_file()


def test_unreadable_last_checkpoint_is_set_aside(tmp_path):
    save = tmp_path / "ckpt"
    prepare_save_dir(save, IDENTITY, CONFIG)
    (save / LAST).write_bytes(b"cut short")
    decision = prepare_save_dir(save, IDENTITY, CONFIG)
    assert decision.update == 0 and "cannot be read" in decision.why
    assert (set_aside_dirs(save)[0] / LAST).read_bytes() == b"cut short"


def test_a_torn_last_checkpoint_resumes_from_the_newest_intact_one(tmp_path):
    """A kill while fairseq wrote checkpoint_last.pt: the numbered checkpoint beside it (or an older
    one) is intact, so the run continues from there; only the torn file is set aside, with its reason."""
    save = tmp_path / "ckpt"
    prepare_save_dir(save, IDENTITY, CONFIG)
    killed_after(save, 30, [2, 4, 10, 20, 30, 32])
    fake_checkpoint(save / "checkpoint_2_20.pt", 20)
    fake_checkpoint(save / "checkpoint_3_30.pt", 30)
    (save / "checkpoint_4_40.pt").write_bytes(b"torn too")  # the kill came while this one was written
    torn = (save / LAST).read_bytes()[: len((save / LAST).read_bytes()) // 2]
    (save / LAST).write_bytes(torn)
    decision = prepare_save_dir(save, IDENTITY, CONFIG)
    assert decision.update == 30, decision.why
    assert "cannot be read" in decision.why and "continuing from checkpoint_3_30.pt" in decision.why
    assert checkpoint_updates(save / LAST) == 30 and [r.step for r in read_log(save)] == [2, 4, 10, 20, 30]
    (aside,) = set_aside_dirs(save)
    assert (aside / LAST).read_bytes() == torn and "cannot be read" in (aside / "REASON.txt").read_text()
    assert (save / "checkpoint_3_30.pt").is_file()  # nothing intact was moved


def test_a_torn_last_checkpoint_with_nothing_intact_beside_it_starts_over_and_says_so(tmp_path):
    save = tmp_path / "ckpt"
    prepare_save_dir(save, IDENTITY, CONFIG)
    killed_after(save, 10, [2, 4, 10])
    (save / LAST).write_bytes(b"cut short")
    (save / "checkpoint_1_10.pt").write_bytes(b"cut short too")
    decision = prepare_save_dir(save, IDENTITY, CONFIG)
    assert decision.update == 0 and "no intact checkpoint is left" in decision.why
    assert "starting from update 0" in decision.why and not (save / LAST).exists()


def test_checkpoints_of_an_older_run_json_are_set_aside(tmp_path):
    save = tmp_path / "ckpt"
    save.mkdir()
    killed_after(save, 10, [2, 4, 10])
    (save / RUN_FILE).write_text(json.dumps({"fingerprint": "f" * 64}))  # written before identities existed
    decision = prepare_save_dir(save, IDENTITY, CONFIG)
    assert decision.update == 0 and "does not say what they were trained on" in decision.why
    assert checkpoint_updates(set_aside_dirs(save)[0] / LAST) == 10


def test_identity_follows_input_bytes_not_their_location(tmp_path):
    a, b = tmp_path / "a" / "iter1", tmp_path / "b" / "iter1"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "train.km").write_text("1 2 3\n")
    cfg = fairseq_config(params(), manifests="m", labels="l", label_rate=100.0, save_dir="s", sample_rate=16000,
                         user_dir="u")
    assert run_identity(cfg, [a / "train.km"]) == run_identity(cfg, [b / "train.km"])
    (b / "train.km").write_text("1 2 4\n")
    assert run_identity(cfg, [a / "train.km"]) != run_identity(cfg, [b / "train.km"])
    longer = fairseq_config(params("tiny", "pretrain.optimization.max_update=80"), manifests="m", labels="l",
                            label_rate=100.0, save_dir="s", sample_rate=16000, user_dir="u")
    assert run_identity(longer, [a / "train.km"]) == run_identity(cfg, [a / "train.km"])
    deeper = fairseq_config(params("tiny", "pretrain.model.encoder_layers=3"), manifests="m", labels="l",
                            label_rate=100.0, save_dir="s", sample_rate=16000, user_dir="u")
    assert run_identity(deeper, [a / "train.km"]) != run_identity(cfg, [a / "train.km"])


# ---------------------------------------------------------------- metrics
def test_final_metrics_against_chance_and_prior():
    labels = LabelSet(label_rate=100.0, units=100, units_in_labels=100, prior_entropy_bits=6.42)

    def stats(loss, acc):
        return {"loss_m_0": loss, "correct_m_0": acc, "count_m_0": 500.0, "count_u_0": 375.0}

    records = [Record("train_inner", 10, stats(6.8, 0.01), 5.0, 10 * 875 * 0.02),
               Record("valid", 10, stats(6.7, 0.02), 5.5, 0.0),
               Record("train_inner", 20, stats(5.0, 0.15), 10.0, 20 * 875 * 0.02)]
    h = HardwareParams(0, "fp32", 0)
    b = BatchParams(320000, 1, 64000, 16000)
    m = final_metrics(records, labels, effective_batch(h, b, 16000), 0.02)
    assert m["labels"]["chance_bits"] == pytest.approx(math.log2(104), abs=1e-6)
    assert (m["loss_m"]["first"], m["loss_m"]["last"], m["loss_m"]["valid_last"]) == (6.8, 5.0, 6.7)
    assert m["loss_m"]["last_over_chance"] == pytest.approx(5.0 / math.log2(104), abs=1e-6)
    assert m["loss_m"]["last_minus_prior_bits"] == pytest.approx(5.0 - 6.42)
    assert m["accuracy_m"] == {"last": 0.15, "valid_last": 0.02}
    assert m["training"]["updates"] == 20 and m["training"]["audio_s_per_update"] == pytest.approx(17.5)
    assert m["training"]["audio_s_per_s"] == pytest.approx(20 * 17.5 / 10.0)
    assert m["batch"]["ratio_to_reference"] == pytest.approx(320000 / 44.8e6, abs=1e-6)

    def numbers_only(tree):
        return all(numbers_only(v) if isinstance(v, dict) else isinstance(v, (int, float)) for v in tree.values())

    assert numbers_only(m)
    no_valid_loss = [*records, Record("valid", 20, {"correct_m_0": 0.2}, 11.0, 0.0)]
    with pytest.raises(TrainingError, match="valid record at update 20 has no loss_m_0"):
        final_metrics(no_valid_loss, labels, effective_batch(h, b, 16000), 0.02)
    assert "below the prior" in verdict(m) and "NOT" not in verdict(m)


# ---------------------------------------------------------------- plugin
PLUGIN_PROBE = textwrap.dedent("""
    import pickle, sys, torch
    from argparse import Namespace
    from fairseq import utils
    from fairseq.data.dictionary import Dictionary
    d = Dictionary()
    d.add_symbol("0")
    torch.save({"model": {}, "task_state": {"dictionaries": [d]}}, "dict.pt")

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    torch.save({"model": {}, "x": Evil()}, "evil.pt")
    try:
        torch.load("dict.pt")
        print("dict: loaded before the plugin")
    except pickle.UnpicklingError:
        print("dict: refused before the plugin")
    utils.import_user_module(Namespace(user_dir=sys.argv[1]))
    print("dict:", len(torch.load("dict.pt")["task_state"]["dictionaries"][0]), "symbols after the plugin")
    try:
        torch.load("evil.pt")
        print("evil: loaded")
    except pickle.UnpicklingError:
        print("evil: refused")
    print("hubert dir on sys.path:", any(p.rstrip("/").endswith("/hubert") for p in sys.path))
""")


def test_plugin_allows_fairseqs_dictionary_and_nothing_else(tmp_path):
    """As fairseq imports it (common.user_dir), in a fresh process: the allow-list is process-wide there."""
    proc = subprocess.run([sys.executable, "-c", PLUGIN_PROBE, str(REPO / "hubert" / "fairseq" / "hubert_dvc_plugin")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dict: refused before the plugin" in out
    assert "dict: 5 symbols after the plugin" in out
    assert "evil: refused" in out and "pwned" not in out
    assert "hubert dir on sys.path: False" in out


def test_detach_links_keeps_the_dvc_cache_out_of_a_resumed_run(tmp_path):
    """A stage run by hand on a checkout whose checkpoints are hardlinked (or symlinked)
    to the DVC cache: fairseq's in-place writes and the log's appends must not reach it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    log_obj, ckpt_obj = cache / "045b", cache / "2dc4"
    log_obj.write_text('{"step": 8000}\n')
    ckpt_obj.write_bytes(b"state at 8000")
    for obj in (log_obj, ckpt_obj):
        obj.chmod(0o444)
    save = tmp_path / "checkpoints"
    save.mkdir()
    (save / "train_log.jsonl").hardlink_to(log_obj)
    (save / "checkpoint_last.pt").symlink_to(ckpt_obj)
    own = save / "run.json"
    own.write_text("{}")
    own_inode = own.stat().st_ino

    detached = detach_links(save)

    assert [p.name for p in detached] == ["checkpoint_last.pt", "train_log.jsonl"]
    assert own.stat().st_ino == own_inode  # a file of its own is left as it is
    assert not (save / "checkpoint_last.pt").is_symlink()
    assert (save / "train_log.jsonl").stat().st_nlink == 1
    assert (save / "checkpoint_last.pt").read_bytes() == b"state at 8000"
    with open(save / "train_log.jsonl", "a") as log:
        log.write('{"step": 9000}\n')
    (save / "checkpoint_last.pt").write_bytes(b"state at 9000")
    assert log_obj.read_text() == '{"step": 8000}\n'
    assert ckpt_obj.read_bytes() == b"state at 8000"
    assert not list(save.glob("*.detach"))
    assert detach_links(save) == []
    assert detach_links(tmp_path / "missing") == []


def test_write_whole_leaves_the_linked_copy_alone(tmp_path):
    """The stages write their fairseq config with write_whole: a new file, not the cached one rewritten."""
    cached = tmp_path / "4cc6"
    cached.write_text("max_update: 8000\n")
    config = tmp_path / "fairseq_config.yaml"
    config.hardlink_to(cached)
    write_whole(config, "max_update: 11000\n")
    assert config.read_text() == "max_update: 11000\n"
    assert cached.read_text() == "max_update: 8000\n"


def test_resuming_a_checkout_linked_to_the_cache_rewrites_only_its_own_copies(tmp_path):
    """prepare_save_dir rewrites run.json and cuts the log back: on files hardlinked to the DVC
    cache (a stage run by hand on a checkout), the cache's copies must stay as they were."""
    save = tmp_path / "ckpt"
    prepare_save_dir(save, IDENTITY, CONFIG)
    killed_after(save, 10, [2, 4, 10, 12, 14])
    cache = tmp_path / "cache"
    cache.mkdir()
    before = {}
    for name in (RUN_FILE, LOG_FILE, LAST):
        os.link(save / name, cache / name)
        before[name] = (cache / name).read_bytes()
    decision = prepare_save_dir(save, IDENTITY, with_changes(CONFIG, optimization={"max_update": 800}))
    assert decision.update == 10 and "now have their own" in decision.why
    assert [r.step for r in read_log(save)] == [2, 4, 10]
    assert (save / RUN_FILE).read_bytes() != before[RUN_FILE]
    assert {name: (cache / name).read_bytes() for name in before} == before
    assert all((save / name).stat().st_nlink == 1 for name in before)
