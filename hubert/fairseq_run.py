"""HuBERT pretraining on fairseq: the config, the launch, and a loss that explains itself.

One pretraining run, top to bottom:

1. :func:`read_label_set` checks the labels against the manifests and the
   dictionary (hubert.labels) and reads what the config must not repeat: the
   label rate (``label_rate.json``, written by the kmeans stage), K (lines of
   ``dict.km.txt``), and from the training labels the units they use and the
   label-prior entropy H(z).
2. :func:`fairseq_config` turns the params (:class:`PretrainParams`) and the
   label set into one complete fairseq-hydra-train YAML. Every path in it is
   relative to the repository root, which is also the training process's
   working directory (``hydra.run.dir: .``), so the file, the checkpoints and
   the logs are the same from any clone path.
3. :func:`train` resumes from fairseq's ``checkpoint_last.pt`` only when the
   config and its inputs are unchanged (:func:`fingerprint`), launches
   fairseq-hydra-train, streams its json log (still printed), logs every
   ``train_inner`` and ``valid`` record to DVCLive at step = num_updates and to a
   persistent ``train_log.jsonl`` (so a resumed run's curves start at update 1),
   and stops the run at the first record whose masked loss is not at the chance
   level of the labels (:func:`check_first_loss`).
4. :func:`final_metrics` summarises the run: masked loss against the chance
   level log2(K+4) and the label prior H(z), accuracy, throughput, and the
   effective batch against fairseq's reference 32 GPUs x 1.4M samples.

All fairseq loss values are in bits (the criterion divides by ln 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import yaml

from hubert.params import from_dict
from hubert.quality import chance_bits

PRECISIONS = ("fp32", "fp16", "bf16")
ITERATIONS = ("iter1", "iter2")
LABEL = "km"  # fairseq label extension: {split}.km and dict.km.txt
SPLITS = ("train", "valid")
# HuBERT's CNN: [(C,10,5)] + [(C,3,2)]*4 + [(C,2,2)]*2, a hop of 5 * 2**6 = 320
# samples (20 ms at 16 kHz). Only the channel count is a parameter: the hop fixes
# the 50 Hz frame rate that label rates 100 (MFCC) and 50 (layer features) divide.
CONV_KERNELS_STRIDES = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
CONV_HOP = math.prod(s for _, s in CONV_KERNELS_STRIDES)
REFERENCE_GPUS = 32  # fairseq hubert_base_librispeech.yaml: distributed_world_size
REFERENCE_MAX_TOKENS = 1_400_000  # ... and max_tokens (samples per GPU)
LOSS_TOLERANCE = 0.10  # first logged masked loss within 10% of log2(units + 4)
# fairseq has no "off" for its epoch-based validation and save schedules; ours
# run by updates (validate_interval_updates, save_interval_updates).
NEVER_EPOCHS = 1_000_000
PLUGIN_DIR = Path(__file__).resolve().parent / "fairseq_plugin"
CONFIG_NAME = "fairseq_config"
LOG_FILE = "train_log.jsonl"
RUN_FILE = "run.json"
LAST = "checkpoint_last.pt"


# ---------------------------------------------------------------- params
@dataclass(frozen=True)
class ModelParams:
    """``pretrain.model``: fairseq ``model.*`` keys of the same names, except
    conv_channels (the width of every CNN layer; kernels and strides are HuBERT's)."""

    conv_channels: int
    encoder_layers: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: int
    encoder_attention_heads: int
    final_dim: int
    conv_pos: int
    conv_pos_groups: int
    extractor_mode: str
    mask_prob: float
    mask_length: int
    feature_grad_mult: float
    untie_final_proj: bool
    dropout: float
    attention_dropout: float
    activation_dropout: float
    dropout_input: float
    dropout_features: float
    encoder_layerdrop: float
    logit_temp: float

    def __post_init__(self) -> None:
        for name, divisor in (("encoder_attention_heads", self.encoder_attention_heads),
                              ("conv_pos_groups", self.conv_pos_groups)):
            if divisor <= 0 or self.encoder_embed_dim % divisor:
                raise ValueError(f"pretrain.model.{name}={divisor} must divide "
                                 f"encoder_embed_dim={self.encoder_embed_dim}")
        if self.extractor_mode not in ("default", "layer_norm"):
            raise ValueError(f"pretrain.model.extractor_mode={self.extractor_mode!r}: use default or layer_norm")
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"pretrain.model.mask_prob={self.mask_prob} must be in [0, 1]")

    def conv_feature_layers(self) -> str:
        """fairseq's conv_feature_layers: a list of (channels, kernel, stride) as a
        string (fairseq eval()s it; ours is a plain literal)."""
        return "[" + ", ".join(f"({self.conv_channels},{k},{s})" for k, s in CONV_KERNELS_STRIDES) + "]"


@dataclass(frozen=True)
class LossParams:
    """``pretrain.loss``: fairseq's hubert criterion. features_pen_weight is its
    ``loss_weights: [w]`` (the weight of the CNN feature penalty)."""

    pred_masked_weight: float
    pred_nomask_weight: float
    features_pen_weight: float


@dataclass(frozen=True)
class OptimizationParams:
    """``pretrain.optimization``: Adam with polynomial decay after a linear warm-up."""

    lr: float
    warmup_updates: int
    max_update: int
    adam_betas: tuple[float, float]
    adam_eps: float
    weight_decay: float
    clip_norm: float

    def __post_init__(self) -> None:
        if self.max_update <= 0:
            raise ValueError(f"pretrain.optimization.max_update={self.max_update} must be positive")
        if not 0 <= self.warmup_updates < self.max_update:
            raise ValueError(f"pretrain.optimization.warmup_updates={self.warmup_updates} must be in "
                             f"[0, max_update={self.max_update})")
        if len(self.adam_betas) != 2:
            raise ValueError(f"pretrain.optimization.adam_betas={list(self.adam_betas)}: give two numbers")


@dataclass(frozen=True)
class BatchParams:
    """``pretrain.batch``: sizes in audio samples. max_tokens is per GPU and
    forward pass; update_freq forward passes make one update; clips are cropped
    to max_sample_size and clips shorter than min_sample_size are left out."""

    max_tokens: int
    update_freq: int
    max_sample_size: int
    min_sample_size: int

    def __post_init__(self) -> None:
        if self.update_freq < 1:
            raise ValueError(f"pretrain.batch.update_freq={self.update_freq} must be >= 1")
        if self.max_tokens < self.max_sample_size:
            raise ValueError(f"pretrain.batch.max_tokens={self.max_tokens} is below max_sample_size="
                             f"{self.max_sample_size}: one cropped clip would not fit in a batch")
        if not 0 < self.min_sample_size <= self.max_sample_size:
            raise ValueError(f"pretrain.batch.min_sample_size={self.min_sample_size} must be in "
                             f"(0, max_sample_size={self.max_sample_size}]")


@dataclass(frozen=True)
class HardwareParams:
    """``pretrain.hardware``: gpus 0 trains on the CPU in one process; gpus N
    trains on N CUDA GPUs of this machine (fairseq's distributed_world_size).
    precision: fp32 | fp16 | bf16 (the last two need GPUs)."""

    gpus: int
    precision: str
    num_workers: int

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"pretrain.hardware.gpus={self.gpus} must be >= 0 (0 = CPU)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"pretrain.hardware.precision={self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.gpus == 0 and self.precision != "fp32":
            raise ValueError(f"pretrain.hardware.precision={self.precision} needs GPUs; on the CPU (gpus: 0) "
                             "use fp32")

    @property
    def workers(self) -> int:
        """Processes that each take max_tokens per forward pass."""
        return max(1, self.gpus)


def check_devices(h: HardwareParams) -> None:
    """Fail before launching when the machine lacks the GPUs the params ask for."""
    if h.gpus == 0:
        return
    import torch

    found = torch.cuda.device_count()
    if found < h.gpus:
        raise ValueError(f"pretrain.hardware.gpus={h.gpus} but this machine has {found} CUDA GPU(s); "
                         "set pretrain.hardware.gpus to at most that (0 trains on the CPU)")


@dataclass(frozen=True)
class ScheduleParams:
    """``pretrain.schedule``: every log_interval updates a train_inner record;
    every save_interval_updates a checkpoint (the resume point, with a
    validation); every validate_interval_updates a validation."""

    log_interval: int
    save_interval_updates: int
    validate_interval_updates: int

    def __post_init__(self) -> None:
        for name in ("log_interval", "save_interval_updates", "validate_interval_updates"):
            if getattr(self, name) <= 0:
                raise ValueError(f"pretrain.schedule.{name}={getattr(self, name)} must be positive")


@dataclass(frozen=True)
class PretrainParams:
    """The ``pretrain`` section for one iteration (shared blocks + ``pretrain.<iteration>`` overrides)."""

    seed: int
    model: ModelParams
    loss: LossParams
    optimization: OptimizationParams
    batch: BatchParams
    hardware: HardwareParams
    schedule: ScheduleParams


def iteration_params(section: dict[str, Any], iteration: str) -> PretrainParams:
    """Build the params of ``iteration`` from the ``pretrain`` section.

    The shared blocks (model, loss, optimization, ...) hold the settings of both
    iterations; ``pretrain.<iteration>`` may override any of their keys, e.g.
    ``iter2: {hardware: {precision: bf16}}``. An override naming a key that the
    shared blocks lack is an error (a typo must not be ignored).
    """
    if iteration not in ITERATIONS:
        raise ValueError(f"unknown iteration {iteration!r}: use one of {', '.join(ITERATIONS)}")
    shared = {k: v for k, v in section.items() if k not in ITERATIONS}
    merged = _merge(shared, section.get(iteration) or {}, f"pretrain.{iteration}", "pretrain")
    return from_dict(PretrainParams, merged, "pretrain")


def _merge(base: dict, override: dict, where: str, base_where: str) -> dict:
    out = dict(base)
    for key, value in override.items():
        if key not in base:
            raise ValueError(f"{where}.{key}: {base_where} has no key {key!r} to override "
                             f"(keys: {', '.join(sorted(base))})")
        if isinstance(value, dict) and isinstance(base[key], dict):
            out[key] = _merge(base[key], value, f"{where}.{key}", f"{base_where}.{key}")
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- labels
@dataclass(frozen=True)
class LabelSet:
    """What the config and the loss check need from a labels directory.

    units: K, the lines of dict.km.txt (fairseq's softmax has K + 4 classes);
    units_in_labels: 1 + the largest unit in the training labels;
    prior_entropy_bits: H(z) of the training labels, the masked loss of a model
    that learned only the label frequencies.
    """

    label_rate: float
    units: int
    units_in_labels: int
    prior_entropy_bits: float

    @property
    def chance_bits(self) -> float:
        return chance_bits(self.units)


def read_label_set(manifests: str | Path, labels: str | Path, sample_rate: int) -> LabelSet:
    """Check train and valid labels against their manifests and dictionary, and read the label set."""
    from hubert.labels import check_labels, read_label_rate
    from hubert.quality import entropy_bits

    manifests, labels = Path(manifests), Path(labels)
    label_rate = read_label_rate(labels)
    dict_file = labels / f"dict.{LABEL}.txt"
    units = [check_labels(manifests / f"{split}.tsv", labels / f"{split}.{LABEL}", dict_file, label_rate,
                          sample_rate)["n_clusters"] for split in SPLITS][0]  # one dictionary for both splits
    counts = np.zeros(units, dtype=np.int64)
    with open(labels / f"train.{LABEL}", encoding="utf-8") as f:
        for line in f:
            counts += np.bincount(np.asarray(line.split(), dtype=np.int64), minlength=units)
    used = np.flatnonzero(counts)
    return LabelSet(label_rate=float(label_rate), units=int(units),
                    units_in_labels=int(used[-1]) + 1 if len(used) else 0,
                    prior_entropy_bits=entropy_bits(counts))


# ---------------------------------------------------------------- config
def fairseq_config(p: PretrainParams, *, manifests: str, labels: str, label_rate: float, save_dir: str,
                   sample_rate: int, user_dir: str) -> dict[str, Any]:
    """The complete fairseq-hydra-train config (HuBERT pretraining) as a dict.

    Paths are used as given: pass them relative to the directory training runs in
    (the repository root). Keys left out keep fairseq-fixed 0.12.3.1's defaults.
    """
    m, o, b, h, s = p.model, p.optimization, p.batch, p.hardware, p.schedule
    return {
        # Hydra: stay in the launch directory (the repository root), write no
        # .hydra/ folder and no hydra_train.log into it.
        "defaults": [{"override hydra/job_logging": "stdout"}],
        "hydra": {"run": {"dir": "."}, "output_subdir": None},
        "common": {
            "seed": p.seed,
            "cpu": h.gpus == 0,
            "fp16": h.precision == "fp16",
            "bf16": h.precision == "bf16",
            "log_format": "json",
            "log_interval": s.log_interval,
            # fairseq's own log format names the logger ("| train_inner |"),
            # which is how records are told apart
            "reset_logging": True,
            "user_dir": user_dir,
        },
        "checkpoint": {
            "save_dir": save_dir,
            "save_interval": NEVER_EPOCHS,
            "save_interval_updates": s.save_interval_updates,
            "keep_interval_updates": 1,
            "no_epoch_checkpoints": True,
        },
        "distributed_training": {
            "distributed_world_size": h.workers,
            "nprocs_per_node": h.workers,
            "ddp_backend": "no_c10d",
            # layerdrop leaves some parameters without gradients in a step
            "find_unused_parameters": True,
        },
        "task": {
            "_name": "hubert_pretraining",
            "data": manifests,
            "label_dir": labels,
            "labels": [LABEL],
            "label_rate": label_rate,
            "sample_rate": sample_rate,
            "max_sample_size": b.max_sample_size,
            "min_sample_size": b.min_sample_size,
            "pad_audio": False,
            "random_crop": True,
            # fairseq: the waveform is layer-normalised exactly when the CNN has
            # per-layer norms (extractor_mode layer_norm)
            "normalize": m.extractor_mode == "layer_norm",
        },
        "dataset": {
            "num_workers": h.num_workers,
            "max_tokens": b.max_tokens,
            # fairseq's default 8 silently drops the last utterances of small sets
            "required_batch_size_multiple": 1,
            "skip_invalid_size_inputs_valid_test": True,
            "validate_interval": NEVER_EPOCHS,
            "validate_interval_updates": s.validate_interval_updates,
            # the same masks at every validation: valid losses compare across
            # updates and runs instead of following the training RNG
            "fixed_validation_seed": p.seed,
            # without loader processes, fairseq's prefetch thread would crop clips
            # with numpy's global RNG while the training thread draws layerdrop
            # from it: the interleaving, and so the run, would change every time
            **({"data_buffer_size": 0} if h.num_workers == 0 else {}),
        },
        "criterion": {
            "_name": "hubert",
            "pred_masked_weight": p.loss.pred_masked_weight,
            "pred_nomask_weight": p.loss.pred_nomask_weight,
            "loss_weights": [p.loss.features_pen_weight],
        },
        "optimization": {
            "max_update": o.max_update,
            "lr": [o.lr],
            "clip_norm": o.clip_norm,
            "update_freq": [b.update_freq],
        },
        "optimizer": {
            "_name": "adam",
            "adam_betas": f"({o.adam_betas[0]},{o.adam_betas[1]})",
            "adam_eps": o.adam_eps,
            "weight_decay": o.weight_decay,
        },
        "lr_scheduler": {"_name": "polynomial_decay", "warmup_updates": o.warmup_updates},
        "model": {
            "_name": "hubert",
            "label_rate": label_rate,
            "conv_feature_layers": m.conv_feature_layers(),
            **{f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "conv_channels"},
        },
    }


def config_yaml(config: dict[str, Any], config_dir: str) -> str:
    header = (
        "# Generated by stages/pretrain.py from params.yaml (pretrain.*) and the labels' label_rate.json\n"
        "# and dict.km.txt. Paths are relative to the repository root; to re-run by hand from there:\n"
        f"#   fairseq-hydra-train --config-dir {config_dir} --config-name {CONFIG_NAME}\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def portable_path(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root`` (the training working directory) when it lies
    inside it, so configs and checkpoints hold no clone-specific prefix; an
    outside path stays absolute (it works, but only on this machine)."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(Path(os.path.abspath(root))).as_posix()
    except ValueError:
        return absolute.as_posix()


def plugin_dir(root: str | Path) -> str:
    """common.user_dir: this package's fairseq plugin, as a path from ``root``."""
    return portable_path(PLUGIN_DIR, root)


# ---------------------------------------------------------------- batch arithmetic
def effective_batch(h: HardwareParams, b: BatchParams, sample_rate: int) -> dict[str, float]:
    """Audio per update at most: workers x max_tokens x update_freq samples, in hours,
    and its ratio to fairseq's reference 32 GPUs x 1.4M samples. (fairseq crops each
    batch to its shortest clip, so the audio actually used per update is smaller:
    see ``audio_s_per_update`` in the final metrics.)"""
    samples = h.workers * b.max_tokens * b.update_freq
    reference = REFERENCE_GPUS * REFERENCE_MAX_TOKENS
    return {
        "workers": h.workers,
        "max_tokens": b.max_tokens,
        "update_freq": b.update_freq,
        "hours_per_update": samples / sample_rate / 3600,
        "reference_hours_per_update": reference / sample_rate / 3600,
        "ratio_to_reference": samples / reference,
    }


def describe_batch(batch: dict[str, float]) -> str:
    ratio = batch["ratio_to_reference"]
    frac = f"1/{1 / ratio:.3g}" if ratio < 1 else f"{ratio:.3g}x"
    return (f"effective batch {batch['workers']} x {batch['max_tokens']} x update_freq {batch['update_freq']} = "
            f"{batch['hours_per_update']:.4g} h of audio per update (at most); reference "
            f"{REFERENCE_GPUS} x {REFERENCE_MAX_TOKENS} = {batch['reference_hours_per_update']:.4g} h: {frac} of it")


# ---------------------------------------------------------------- fingerprint
def fingerprint(config_text: str, inputs: Iterable[str | Path]) -> str:
    """sha256 of the config and the bytes of its input files (manifests, labels,
    dictionary): a checkpoint is resumed only under the same fingerprint. The
    audio is not hashed: labels are computed from it, so new audio means new labels."""
    h = hashlib.sha256(config_text.encode("utf-8"))
    for path in inputs:
        h.update(b"\0" + Path(path).name.encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def input_files(manifests: str | Path, labels: str | Path) -> list[Path]:
    manifests, labels = Path(manifests), Path(labels)
    return ([manifests / f"{s}.tsv" for s in SPLITS] + [labels / f"{s}.{LABEL}" for s in SPLITS]
            + [labels / f"dict.{LABEL}.txt"])


# ---------------------------------------------------------------- log records
# fairseq's json progress records: "... | train_inner | {...}" (fairseq's format)
# or "[...][valid][INFO] - {...}" (Hydra's); values are strings.
_RECORD = re.compile(r"[|\[]\s*(train_inner|train|valid)\s*[|\]].*?(\{.*\})\s*$")


def parse_log_line(line: str) -> tuple[str, dict[str, float]] | None:
    """(tag, stats) of a fairseq json progress line, keys without the ``valid_`` /
    ``train_`` prefix of end-of-epoch and validation records; None for other lines."""
    match = _RECORD.search(line)
    if not match:
        return None
    tag = match.group(1)
    try:
        raw = json.loads(match.group(2))
    except json.JSONDecodeError:
        return None
    prefix = f"{tag}_" if tag in ("train", "valid") else ""
    stats: dict[str, float] = {}
    for key, value in raw.items():
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
        try:
            stats[key] = float(value)
        except (TypeError, ValueError):
            continue
    return tag, stats


@dataclass(frozen=True)
class Record:
    """One logged record: tag train_inner | valid, step = num_updates, fairseq's
    values, and our clock: cumulative seconds in the training loop and
    cumulative audio seconds trained at this record (across resumed runs)."""

    tag: str
    step: int
    stats: dict[str, float]
    train_s: float
    audio_s: float

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "Record":
        return cls(**json.loads(line))


def audio_per_update_s(stats: dict[str, float], frame_s: float) -> float:
    """Audio seconds one update trained on: every unpadded frame is either masked
    or not, and fairseq logs both counts (averaged per update over the interval)."""
    return (stats.get("count_m_0", 0.0) + stats.get("count_u_0", 0.0)) * frame_s


def plot_values(record: Record, previous: Record | None, chance: float) -> dict[str, float]:
    """What one record puts in the DVCLive plots (names without the train/ valid/ prefix).

    fairseq's criterion already divides correct_* by count_* when it reduces the
    logs, so correct_m_0 is the masked accuracy as logged.
    """
    s = record.stats
    names = {"loss": "loss", "loss_m": "loss_m_0", "loss_u": "loss_u_0", "features_pen": "loss_features_pen",
             "accuracy_m": "correct_m_0", "accuracy_u": "correct_u_0", "lr": "lr", "gnorm": "gnorm"}
    out = {name: s[key] for name, key in names.items() if key in s}
    if "loss_m" in out:
        out["loss_m_over_chance"] = out["loss_m"] / chance
    if record.tag == "train_inner":
        seconds = record.train_s - (previous.train_s if previous else 0.0)
        audio = record.audio_s - (previous.audio_s if previous else 0.0)
        if seconds > 0:
            out["audio_s_per_s"] = audio / seconds
    return out


# ---------------------------------------------------------------- loss check
class LossSanityError(RuntimeError):
    """The first masked loss is not at the chance level of the labels."""


def check_first_loss(loss_m: float, units_in_labels: int, units_in_dict: int, dict_file: str | Path,
                     tolerance: float = LOSS_TOLERANCE) -> str | None:
    """None when the first logged masked loss is within ``tolerance`` of
    log2(units_in_labels + 4), else a diagnosis.

    A fresh HuBERT scores every frame against all its dictionary's embeddings,
    which start nearly alike: its masked loss is about log2(D + 4) for a
    dictionary of D units. The labels say how many units there should be; a first
    loss far from their chance level means fairseq is not predicting these labels
    with this dictionary.
    """
    expected = chance_bits(units_in_labels)
    if abs(loss_m - expected) <= tolerance * expected:
        return None
    dict_chance = chance_bits(units_in_dict)
    lines = [f"the first logged masked loss is {loss_m:.3f} bits, not within {tolerance:.0%} of the chance level "
             f"log2({units_in_labels} + 4) = {expected:.3f} bits of the {units_in_labels} units the training "
             f"labels use; the dictionary or the labels are inconsistent."]
    if abs(loss_m - dict_chance) <= tolerance * dict_chance and units_in_dict != units_in_labels:
        lines.append(f"It is the chance level of {dict_file} instead ({units_in_dict} units: log2({units_in_dict} "
                     f"+ 4) = {dict_chance:.3f} bits): the dictionary does not belong to these labels (another "
                     "k-means run?). Re-run the kmeans stage so that labels and dict.km.txt are written together.")
    elif loss_m < expected:
        lines.append("A loss this far below chance at the start means the targets are nearly constant: most "
                     f"labels map to one symbol (<unk> when {dict_file} does not list them; an empty dictionary "
                     "makes every label <unk> and the loss collapses to 0). Check the dictionary against the "
                     "labels and re-run the kmeans stage.")
    else:
        lines.append("A loss this far above chance at the start means the initial predictions are far from "
                     "uniform: check that the labels belong to this manifest and that model.final_dim is not "
                     "tiny (a small final_dim makes the initial cosine logits uneven).")
    return " ".join(lines)


# ---------------------------------------------------------------- resume
def checkpoint_updates(path: str | Path) -> int:
    """num_updates stored in a fairseq checkpoint."""
    from hubert.checkpoint import safe_load

    return int(safe_load(path)["optimizer_history"][-1]["num_updates"])


def prepare_save_dir(save_dir: str | Path, fp: str, shown: str | None = None) -> tuple[int, str]:
    """Decide between resuming and starting over; returns (update to resume from, why).

    A checkpoint is resumed only when the fingerprint stored beside it equals
    ``fp``; otherwise the directory is emptied (checkpoints of another config
    or other labels must not be continued). The training log is cut back to the
    checkpoint, since fairseq redoes the updates logged after it. Messages name
    the directory as ``shown`` (default: as given).
    """
    save_dir = Path(save_dir)
    shown = shown or str(save_dir)
    run_file, last = save_dir / RUN_FILE, save_dir / LAST
    stored = json.loads(run_file.read_text(encoding="utf-8")).get("fingerprint") if run_file.is_file() else None
    resume, why = 0, "no checkpoint: starting from update 0"
    if stored is not None and stored != fp:
        why = (f"the config or its inputs changed since the checkpoints in {shown} were written "
               f"(fingerprint {stored[:12]} -> {fp[:12]}): starting over from update 0")
    elif stored is not None and last.is_file():
        try:
            resume = checkpoint_updates(last)
            why = f"resuming from {shown}/{LAST} at update {resume} (same config and inputs)"
        except Exception as exc:  # a checkpoint cut short while being copied
            why = f"{shown}/{LAST} cannot be read ({exc}): starting over from update 0"
    kept = [r for r in read_log(save_dir) if r.step <= resume]
    if resume and not kept:
        resume, why = 0, f"{shown}/{LOG_FILE} is missing, so the curves could not be complete: starting over"
    if resume == 0 and save_dir.exists():
        shutil.rmtree(save_dir)
        kept = []
    save_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"fingerprint": fp}, indent=2) + "\n", encoding="utf-8")
    (save_dir / LOG_FILE).write_text("".join(r.to_json() + "\n" for r in kept), encoding="utf-8")
    return resume, why


def read_log(save_dir: str | Path) -> list[Record]:
    path = Path(save_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [Record.from_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- DVCLive
class LivePlots:
    """Per-record DVCLive plots: ``train/<name>`` and ``valid/<name>`` at step = num_updates."""

    def __init__(self, live_dir: str | Path, chance: float) -> None:
        from dvclive import Live

        # dvcyaml=False: the plots are declared in the repository's dvc.yaml, and
        # DVCLive must not rewrite it; save_dvc_exp=False: DVC runs the stage.
        self.live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False)
        self.chance = chance
        self.previous: dict[str, Record] = {}

    def log(self, record: Record) -> None:
        prefix = "train" if record.tag == "train_inner" else "valid"
        self.live.step = record.step
        for name, value in plot_values(record, self.previous.get(record.tag), self.chance).items():
            self.live.log_metric(f"{prefix}/{name}", value)
        self.previous[record.tag] = record

    def close(self) -> None:
        self.live.end()


# ---------------------------------------------------------------- training
class TrainingError(RuntimeError):
    """fairseq-hydra-train failed or was killed."""


@dataclass(frozen=True)
class RunResult:
    records: list[Record]
    resumed_from: int
    process_s: float


def train_command(config_dir: str) -> list[str]:
    """fairseq-hydra-train with the interpreter running us (the same venv)."""
    return [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", config_dir, "--config-name", CONFIG_NAME]


def train(*, root: str | Path, config_dir: str, save_dir: str, fp: str, max_update: int, labels: LabelSet,
          dict_file: str, live_dir: str | Path, frame_s: float, echo: Callable[[str], None] = print) -> RunResult:
    """Run (or resume) fairseq-hydra-train on ``config_dir/fairseq_config.yaml`` from ``root``.

    Every train_inner and valid record goes to ``save_dir/train_log.jsonl`` and
    to DVCLive as it arrives; the DVCLive directory is rebuilt from the kept log
    first, so a resumed run's plots start at update 1. Raises LossSanityError
    (after stopping fairseq and emptying ``save_dir``) when the first masked
    loss is off chance, and TrainingError when fairseq exits with an error; its
    last checkpoint is then kept for the next run to resume.
    """
    root = Path(root)
    save_path = root / save_dir
    resume, why = prepare_save_dir(save_path, fp, shown=save_dir)
    echo(f"pretrain: {why}")
    records = read_log(save_path)
    plots = LivePlots(live_dir, labels.chance_bits)
    try:
        for r in records:
            plots.log(r)
        if resume >= max_update:
            echo(f"pretrain: {save_dir}/{LAST} already has {resume} of {max_update} updates: nothing to train")
            return RunResult(records, resume, 0.0)
        return RunResult(*_stream(root, config_dir, save_dir, records, plots, resume, labels, dict_file,
                                  frame_s, echo))
    finally:
        plots.close()


def _stream(root: Path, config_dir: str, save_dir: str, records: list[Record], plots: LivePlots, resume: int,
            labels: LabelSet, dict_file: str, frame_s: float,
            echo: Callable[[str], None]) -> tuple[list[Record], int, float]:
    save_path = root / save_dir
    cmd = train_command(config_dir)
    echo("pretrain: " + " ".join(cmd))
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # records must arrive when logged: we time them
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    base_train_s = records[-1].train_s if records else 0.0
    audio_s = records[-1].audio_s if records else 0.0
    last_step = {"train_inner": resume, "valid": resume}
    loop_start = None
    check_pending = resume == 0
    try:
        with open(save_path / LOG_FILE, "a", encoding="utf-8") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                now = time.monotonic()
                echo(line.rstrip("\n"))
                if loop_start is None and "Start iterating over samples" in line:
                    loop_start = now  # fairseq's training loop begins: start-up time is not training time
                parsed = parse_log_line(line)
                if parsed is None or parsed[0] == "train":
                    continue  # end-of-epoch averages repeat what train_inner logged
                tag, stats = parsed
                step = int(stats.get("num_updates", last_step[tag]))
                if loop_start is None:
                    loop_start = start
                if tag == "train_inner":
                    audio_s += audio_per_update_s(stats, frame_s) * (step - last_step[tag])
                last_step[tag] = step
                record = Record(tag, step, stats, base_train_s + (now - loop_start), audio_s)
                log.write(record.to_json() + "\n")
                log.flush()
                records.append(record)
                plots.log(record)
                if check_pending and tag == "train_inner":
                    check_pending = False
                    problem = check_first_loss(stats.get("loss_m_0", float("nan")), labels.units_in_labels,
                                               labels.units, dict_file)
                    if problem:
                        _stop(proc)
                        shutil.rmtree(save_path)  # nothing of this run may be resumed
                        raise LossSanityError(f"pretraining stopped at update {step}: {problem}")
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    process_s = time.monotonic() - start
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code} (see its output above)"
        if (save_path / LAST).is_file():
            then = (f"Its last checkpoint ({save_dir}/{LAST}: update {checkpoint_updates(save_path / LAST)}) "
                    "is kept: run the stage again (dvc repro) to resume from it.")
        else:
            then = "It saved no checkpoint: the next run starts from update 0."
        raise TrainingError(f"fairseq-hydra-train {how}. {then}")
    return records, resume, process_s


def _stop(proc: subprocess.Popen) -> None:
    """Stop fairseq and the processes it started (distributed workers, data loaders)."""
    import psutil

    if proc.poll() is not None:
        return
    try:
        family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


# ---------------------------------------------------------------- outputs
def export_checkpoint(src: str | Path, dst: str | Path) -> int:
    """Copy a fairseq checkpoint without its optimizer state (the model that later
    stages and other toolkits load); returns its num_updates.

    The trainer's meters and elapsed time go too: they are only needed to resume
    training, and without them the same training gives the same bytes.
    """
    import torch

    from hubert.checkpoint import safe_load

    state = safe_load(src)
    state.pop("last_optimizer_state", None)
    for volatile in ("metrics", "previous_training_time"):
        state.get("extra_state", {}).pop(volatile, None)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, dst)
    return int(state["optimizer_history"][-1]["num_updates"])


def final_metrics(records: list[Record], labels: LabelSet, batch: dict[str, float], frame_s: float) -> dict:
    """metrics/pretrain_<iteration>.json: numbers only."""
    train = [r for r in records if r.tag == "train_inner"]
    valid = [r for r in records if r.tag == "valid"]
    if not train:
        raise TrainingError("fairseq logged no train_inner record: nothing to summarise")
    chance = labels.chance_bits
    first, last = train[0].stats, train[-1].stats
    out: dict[str, Any] = {
        "labels": {
            "units": labels.units,
            "units_in_labels": labels.units_in_labels,
            "label_rate": labels.label_rate,
            "chance_bits": chance,
            "prior_entropy_bits": labels.prior_entropy_bits,
        },
        "loss_m": {
            "first": first["loss_m_0"],
            "last": last["loss_m_0"],
            "first_over_chance": first["loss_m_0"] / chance,
            "last_over_chance": last["loss_m_0"] / chance,
            "last_minus_prior_bits": last["loss_m_0"] - labels.prior_entropy_bits,
        },
        "accuracy_m": {"last": last.get("correct_m_0", 0.0)},
        "training": {
            "updates": train[-1].step,
            "wall_time_s": train[-1].train_s,
            "audio_hours": train[-1].audio_s / 3600,
            "audio_s_per_s": train[-1].audio_s / train[-1].train_s if train[-1].train_s > 0 else 0.0,
            "audio_s_per_update": float(np.mean([audio_per_update_s(r.stats, frame_s) for r in train])),
        },
        "batch": dict(batch),
    }
    if valid:
        out["loss_m"]["valid_last"] = valid[-1].stats.get("loss_m_0", float("nan"))
        out["accuracy_m"]["valid_last"] = valid[-1].stats.get("correct_m_0", float("nan"))
    return _rounded(out)


def _rounded(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    if isinstance(d, float):
        return round(d, 6)
    return d


def verdict(metrics: dict) -> str:
    """One line on where the masked loss ended, against chance and the label prior."""
    m, lab = metrics["loss_m"], metrics["labels"]
    below = "below" if m["last"] < lab["prior_entropy_bits"] else "NOT below"
    return (f"masked loss {m['first']:.3f} -> {m['last']:.3f} bits (chance log2(K+4) = {lab['chance_bits']:.3f}, "
            f"label prior H(z) = {lab['prior_entropy_bits']:.3f}: {below} the prior), masked accuracy "
            f"{metrics['accuracy_m']['last']:.3f}, {metrics['training']['updates']} updates, "
            f"{metrics['training']['audio_s_per_s']:.1f} audio s per s")
