"""The fairseq-hydra-train config of one HuBERT pretraining run, the label set it
reads, and the batch arithmetic against fairseq's reference."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hubert.fairseq.formats import KM, dict_file, iter_label_lines, label_file
from hubert.fairseq.launcher import NEVER_EPOCHS, common_block, config_identity, file_digest, hydra_block
from hubert.labels.checks import check_labels, read_label_rate
from hubert.labels.quality import chance_bits, conditional_entropy_bits, entropy_bits, unit_and_pair_counts
from hubert.pretrain.params import (
    CPU_AUTOCAST_ENV,
    BatchParams,
    HardwareParams,
    OptimizationParams,
    PretrainParams,
    distributed_training,
    require_resolved,
)

SPLITS = ("train", "valid")
CONFIG_NAME = "fairseq_config"
REFERENCE_GPUS = 32  # fairseq hubert_base_librispeech.yaml: distributed_world_size
REFERENCE_MAX_TOKENS = 1_400_000  # ... and max_tokens (samples per GPU)


# ---------------------------------------------------------------- labels
@dataclass(frozen=True)
class LabelSet:
    """What the config and the loss check need from a labels directory.

    units: K, the lines of dict.km.txt (fairseq's softmax has K + 4 classes);
    units_in_labels: 1 + the largest unit in the training labels;
    prior_entropy_bits: H(z) of the training labels, the masked loss of a model
    that learned only the label frequencies; bigram_entropy_bits: H(z_t | z_(t-1)),
    that of a model that also knew the previous unit (a second reference, not a
    bound on a masked prediction); valid_subsets: what fairseq validates on, the
    valid split and one per language (valid_<lang>, when the manifests have them).
    """

    label_rate: float
    units: int
    units_in_labels: int
    prior_entropy_bits: float
    bigram_entropy_bits: float = 0.0
    valid_subsets: tuple[str, ...] = ("valid",)

    @property
    def chance_bits(self) -> float:
        return chance_bits(self.units)


def read_label_set(manifests: str | Path, labels: str | Path, sample_rate: int) -> LabelSet:
    """Check train and valid labels against their manifests and dictionary, and read the label set."""
    manifests, labels = Path(manifests), Path(labels)
    label_rate = read_label_rate(labels)
    units = [check_labels(manifests / f"{split}.tsv", label_file(labels, split), dict_file(labels), label_rate,
                          sample_rate)["n_clusters"] for split in SPLITS][0]  # one dictionary for both splits
    # streamed: the training labels of a large corpus need not fit in memory
    counts, pairs = unit_and_pair_counts((np.asarray(line, dtype=np.int64)
                                          for line in iter_label_lines(label_file(labels, "train"))), units)
    used = np.flatnonzero(counts)
    per_language = tuple(sorted(p.stem for p in manifests.glob("valid_*.tsv") if label_file(labels, p.stem).is_file()))
    return LabelSet(label_rate=float(label_rate), units=int(units),
                    units_in_labels=int(used[-1]) + 1 if len(used) else 0,
                    prior_entropy_bits=entropy_bits(counts), bigram_entropy_bits=conditional_entropy_bits(pairs),
                    valid_subsets=("valid", *per_language))


# what may change between a checkpoint and its continuation: how long (max_update and the
# schedule's length that follows it), where, on what hardware (GPUs and update_freq trade
# against each other at the same effective batch), how often to log, validate and save;
# paths (the bytes behind them are in the identity); precision, decided below
CONTINUABLE = ("hydra.", "defaults", "common.log_interval", "common.user_dir", "common.cpu", "common.fp16",
               "common.bf16", "checkpoint.", "distributed_training.", "dataset.num_workers",
               "dataset.data_buffer_size", "dataset.validate_interval", "dataset.max_tokens",
               "optimization.max_update", "optimization.update_freq", "task.data", "task.label_dir")


def run_identity(config: dict[str, Any], inputs: list[Path]) -> dict[str, str]:
    """What a checkpoint must have been trained with to be continued by this config: every
    config key that shapes the training (model, masking, loss, learning rate and schedule,
    crops, seed, labels), the bytes of the manifests, labels and dictionary (not their
    paths: a clone elsewhere continues the same run), and whether precision is fp32 or
    half (on GPUs fp16 and bf16 continue each other; on the CPU bf16 is autocast around
    fp32 training, so fp32 and bf16 continue each other). Only what CONTINUABLE names
    may change: a finished run given another learning rate starts over rather than
    reporting the old model under the new params, as fine-tuning does."""
    identity = config_identity(config, CONTINUABLE)
    # fairseq keeps an fp32 run's Adam state in FairseqAdam and an fp16/bf16 run's in FP16Optimizer,
    # and refuses the other's; its only way round (reset_optimizer) also restarts the update count
    half = config["common"]["fp16"] or config["common"]["bf16"]
    identity["precision"] = "fp16/bf16" if half else "fp32"
    identity |= {f"file {Path(p).parent.name}/{Path(p).name}": file_digest(p) for p in inputs}
    return identity


def input_files(manifests: str | Path, labels: str | Path) -> list[Path]:
    manifests, labels = Path(manifests), Path(labels)
    return [manifests / f"{s}.tsv" for s in SPLITS] + [label_file(labels, s) for s in SPLITS] + [dict_file(labels)]


# ---------------------------------------------------------------- config
def fairseq_config(p: PretrainParams, *, manifests: str, labels: str, label_rate: float, save_dir: str,
                   sample_rate: int, user_dir: str, valid_subsets: tuple[str, ...] = ("valid",)) -> dict[str, Any]:
    """The complete fairseq-hydra-train config (HuBERT pretraining) as a dict.

    Paths are used as given: pass them relative to the directory training runs in
    (the repository root). Keys left out keep fairseq-fixed 0.12.3.1's defaults.
    """
    m, o, b, h, s = p.model, p.optimization, p.batch, p.hardware, p.schedule
    require_resolved(h)
    return {
        **hydra_block(),
        "common": common_block(p.seed, h.gpus, h.precision, h.cpu_autocast, s.log_interval, user_dir),
        "checkpoint": {
            "save_dir": save_dir,
            "save_interval": NEVER_EPOCHS,
            "save_interval_updates": s.save_interval_updates,
            "keep_interval_updates": 1,
            "no_epoch_checkpoints": True,
        },
        "distributed_training": distributed_training(h),
        "task": {
            "_name": "hubert_pretraining",
            "data": manifests,
            "label_dir": labels,
            "labels": [KM],
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
            # one validation per subset: the valid split, then each language's part of it
            "valid_subset": ",".join(valid_subsets),
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
        "lr_scheduler": lr_scheduler(o),
        "model": {
            "_name": "hubert",
            "label_rate": label_rate,
            "conv_feature_layers": m.conv_feature_layers(),
            **{f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "conv_channels"},
        },
    }


def process_overrides(h: HardwareParams) -> tuple[tuple[str, ...], ...]:
    """The Hydra overrides of each fairseq process the stage starts (on this node): one
    process with none, or one per rank for CPU processes."""
    if h.gpus == 0 and h.world_size > 1:
        return tuple((f"distributed_training.distributed_rank={rank}",) for rank in range(h.world_size))
    return ((),)


def launch_prefix(h: HardwareParams, environ: dict[str, str]) -> tuple[str, ...]:
    """What starts fairseq on every node: nothing on one node; across nodes, SLURM's srun
    with one task per node of the allocation the stage runs in."""
    if h.nodes == 1:
        return ()
    if "SLURM_JOB_ID" not in environ:
        raise ValueError(f"pretrain.hardware.nodes={h.nodes}: run the stage inside a SLURM allocation of "
                         f"{h.nodes} nodes (sbatch --nodes={h.nodes} --ntasks-per-node=1 "
                         f"--gpus-per-node={h.gpus} ...), which starts fairseq on each of them through srun")
    return ("srun", f"--nodes={h.nodes}", "--ntasks-per-node=1")


def lr_scheduler(o: OptimizationParams) -> dict[str, Any]:
    """fairseq's lr_scheduler block for the params' schedule."""
    if o.lr_scheduler == "tri_stage":
        return {"_name": "tri_stage", "phase_ratio": list(o.phase_ratio), "init_lr_scale": 0.01,
                "final_lr_scale": o.final_lr_scale}
    return {"_name": "polynomial_decay", "warmup_updates": o.warmup_updates}


def config_header(config_dir: str, h: HardwareParams | None = None) -> str:
    """The comment lines on top of the config file."""
    ranks = process_overrides(h) if h is not None else ((),)
    rank = " distributed_training.distributed_rank=R" if len(ranks) > 1 else ""
    env = f"{CPU_AUTOCAST_ENV}=bf16 " if h is not None and h.cpu_autocast else ""
    return ("# Generated by stages/pretrain.py from params.yaml (pretrain.*) and the labels' label_rate.json\n"
            "# and dict.km.txt. Paths are relative to the repository root; to re-run by hand from there:\n"
            f"#   {env}fairseq-hydra-train --config-dir {config_dir} --config-name {CONFIG_NAME}{rank}\n"
            + (f"# once for each rank R in 0..{len(ranks) - 1}\n" if len(ranks) > 1 else ""))


# ---------------------------------------------------------------- batch arithmetic
def effective_batch(h: HardwareParams, b: BatchParams, sample_rate: int) -> dict[str, float]:
    """Audio per update at most: workers x max_tokens x update_freq samples, in hours,
    and its ratio to fairseq's reference 32 GPUs x 1.4M samples. (fairseq crops each
    batch to its shortest clip, so the audio actually used per update is smaller:
    see ``audio_s_per_update`` in the final metrics.)"""
    return batch_arithmetic(h.workers, b.max_tokens, b.update_freq, sample_rate)


def batch_arithmetic(workers: int, max_tokens: int, update_freq: int, sample_rate: int) -> dict[str, float]:
    """:func:`effective_batch` from the plain numbers (also what a foreign log's config says)."""
    samples = workers * max_tokens * update_freq
    reference = REFERENCE_GPUS * REFERENCE_MAX_TOKENS
    return {
        "workers": workers,
        "max_tokens": max_tokens,
        "update_freq": update_freq,
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
