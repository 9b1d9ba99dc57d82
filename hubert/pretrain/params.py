"""The ``pretrain`` params section: one strict dataclass per block, the shared
blocks merged with the ``pretrain.<iteration>`` overrides."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubert.params import from_dict

# auto: the fastest this machine computes natively, decided when the stage starts (resolve_precision)
PRECISIONS = ("fp32", "fp16", "bf16", "auto")
# set to "bf16" in the environment of the fairseq processes that pretrain under CPU autocast
CPU_AUTOCAST_ENV = "HUBERT_DVC_CPU_AUTOCAST"
BACKENDS = ("nccl", "gloo")
LR_SCHEDULERS = ("polynomial_decay", "tri_stage")
ITERATIONS = ("iter1", "iter2")
# HuBERT's CNN: [(C,10,5)] + [(C,3,2)]*4 + [(C,2,2)]*2, a hop of 5 * 2**6 = 320
# samples (20 ms at 16 kHz). Only the channel count is a parameter: the hop fixes
# the 50 Hz frame rate that label rates 100 (MFCC) and 50 (layer features) divide.
CONV_KERNELS_STRIDES = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
CONV_HOP = math.prod(s for _, s in CONV_KERNELS_STRIDES)


def conv_feature_layers(widths: list[int]) -> str:
    """fairseq's conv_feature_layers for these CNN widths: a list of (channels, kernel,
    stride) as a string (fairseq eval()s it; ours is a plain literal)."""
    return "[" + ", ".join(f"({c},{k},{s})" for c, (k, s) in zip(widths, CONV_KERNELS_STRIDES, strict=True)) + "]"


@dataclass(frozen=True)
class ModelParams:
    """``pretrain.model``: fairseq ``model.*`` keys of the same names, except
    conv_channels: the width of every CNN layer, or a list of 7 widths, one per
    layer (narrow early layers cost least: they run at 3200 and 1600 frames per
    second); kernels and strides are HuBERT's, so the 320-sample hop stays.
    layer_norm_first: pre-LN transformer layers (HuBERT Large's choice), which
    tolerate higher learning rates than post-LN."""

    conv_channels: int | tuple
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
    layer_norm_first: bool = False

    def __post_init__(self) -> None:
        widths = self.conv_widths()
        if len(widths) != len(CONV_KERNELS_STRIDES) or min(widths) < 1:
            raise ValueError(f"pretrain.model.conv_channels={self.conv_channels!r}: give one positive width, or "
                             f"{len(CONV_KERNELS_STRIDES)} (one per CNN layer)")
        for name, divisor in (("encoder_attention_heads", self.encoder_attention_heads),
                              ("conv_pos_groups", self.conv_pos_groups)):
            if divisor <= 0 or self.encoder_embed_dim % divisor:
                raise ValueError(f"pretrain.model.{name}={divisor} must divide "
                                 f"encoder_embed_dim={self.encoder_embed_dim}")
        if self.extractor_mode not in ("default", "layer_norm"):
            raise ValueError(f"pretrain.model.extractor_mode={self.extractor_mode!r}: use default or layer_norm")
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"pretrain.model.mask_prob={self.mask_prob} must be in [0, 1]")

    def conv_widths(self) -> list[int]:
        if isinstance(self.conv_channels, int):
            return [self.conv_channels] * len(CONV_KERNELS_STRIDES)
        return [int(c) for c in self.conv_channels]

    def conv_feature_layers(self) -> str:
        return conv_feature_layers(self.conv_widths())


@dataclass(frozen=True)
class LossParams:
    """``pretrain.loss``: fairseq's hubert criterion. features_pen_weight is its
    ``loss_weights: [w]`` (the weight of the CNN feature penalty)."""

    pred_masked_weight: float
    pred_nomask_weight: float
    features_pen_weight: float


@dataclass(frozen=True)
class OptimizationParams:
    """``pretrain.optimization``: Adam and a learning-rate schedule: lr_scheduler
    polynomial_decay (linear warm-up over warmup_updates, then linear decay to 0 at
    max_update: HuBERT's recipe) or tri_stage (warm-up, hold, exponential decay to
    final_lr_scale x lr, lasting phase_ratio of max_update: wav2vec 2.0's
    fine-tuning schedule, which keeps the peak rate longer)."""

    lr: float
    warmup_updates: int
    max_update: int
    adam_betas: tuple[float, float]
    adam_eps: float
    weight_decay: float
    clip_norm: float
    lr_scheduler: str = "polynomial_decay"
    phase_ratio: tuple = (0.1, 0.4, 0.5)
    final_lr_scale: float = 0.05

    def __post_init__(self) -> None:
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"pretrain.optimization.lr_scheduler={self.lr_scheduler!r}: use one of "
                             f"{', '.join(LR_SCHEDULERS)}")
        if len(self.phase_ratio) != 3 or min(self.phase_ratio) < 0 or abs(sum(self.phase_ratio) - 1) > 1e-6:
            raise ValueError(f"pretrain.optimization.phase_ratio={list(self.phase_ratio)}: three non-negative "
                             "fractions (warm-up, hold, decay) that sum to 1")
        if not 0 < self.final_lr_scale <= 1:
            raise ValueError(f"pretrain.optimization.final_lr_scale={self.final_lr_scale} must be in (0, 1]")
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
    """``pretrain.hardware``: gpus 0 trains on the CPU; gpus N trains on N CUDA
    GPUs per node, one fairseq process each. cpu_processes: with gpus 0, training
    processes per node (data-parallel through fairseq's distributed trainer, gloo
    backend). nodes: machines; fairseq's distributed_world_size is nodes x
    processes per node. backend: torch.distributed's (nccl for GPUs, gloo for
    CPUs), used when there is more than one process. port: the rendezvous port
    on the first node, used across nodes and by CPU processes (on one GPU node
    fairseq picks its own). precision: fp32 | fp16 | bf16 | auto; on GPUs fairseq's fp16 /
    bf16 training; on the CPU (gpus 0) fp16 is refused and bf16 means pretraining
    under bf16 autocast with fp32 weights (:mod:`hubert.fairseq.cpu_autocast`;
    fine-tuning on the CPU stays fp32). auto is decided by :func:`check_devices`
    on the machine that trains: bf16 where it computes bf16 natively, otherwise
    fp32 on a CPU and fp16 on GPUs."""

    gpus: int
    precision: str
    num_workers: int
    nodes: int = 1
    cpu_processes: int = 1
    backend: str = "nccl"
    port: int = 29500

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"pretrain.hardware.gpus={self.gpus} must be >= 0 (0 = CPU)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"pretrain.hardware.precision={self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.gpus == 0 and self.precision == "fp16":
            raise ValueError("pretrain.hardware.precision=fp16 needs GPUs; on the CPU (gpus: 0) use fp32, bf16 "
                             "(autocast: fp32 weights, bf16 matrix products) or auto")
        if self.nodes < 1:
            raise ValueError(f"pretrain.hardware.nodes={self.nodes} must be >= 1")
        if self.cpu_processes < 1:
            raise ValueError(f"pretrain.hardware.cpu_processes={self.cpu_processes} must be >= 1")
        if self.gpus > 0 and self.cpu_processes != 1:
            raise ValueError(f"pretrain.hardware.cpu_processes={self.cpu_processes} is for CPU training (gpus: 0); "
                             f"with gpus {self.gpus} fairseq runs one process per GPU: leave it at 1")
        if self.backend not in BACKENDS:
            raise ValueError(f"pretrain.hardware.backend={self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.gpus == 0 and self.world_size > 1 and self.backend != "gloo":
            raise ValueError(f"pretrain.hardware.backend={self.backend} needs GPUs; CPU processes (gpus: 0) "
                             "communicate through gloo: set pretrain.hardware.backend=gloo")
        if self.gpus == 0 and self.nodes > 1:
            # _infer_slurm_init (fairseq/distributed/utils.py) counts a node's processes with
            # torch.cuda.device_count() and selects each task's device with torch.cuda.set_device
            raise ValueError(f"pretrain.hardware.nodes={self.nodes} needs GPUs: fairseq places the processes of "
                             "a multi-node job on CUDA devices; CPU training runs on one node (cpu_processes)")
        if not 0 < self.port < 65536:
            raise ValueError(f"pretrain.hardware.port={self.port} must be a TCP port (1-65535)")

    @property
    def processes_per_node(self) -> int:
        """fairseq processes on each node (fairseq's nprocs_per_node)."""
        return self.gpus if self.gpus else self.cpu_processes

    @property
    def world_size(self) -> int:
        """All training processes (fairseq's distributed_world_size)."""
        return self.nodes * self.processes_per_node

    @property
    def workers(self) -> int:
        """Processes that each take max_tokens per forward pass."""
        return self.world_size

    @property
    def cpu_autocast(self) -> bool:
        """Pretraining on the CPU under bf16 autocast (fairseq itself trains fp32)."""
        return self.gpus == 0 and self.precision == "bf16"


# /proc/cpuinfo flags of CPUs that compute in bf16 natively; elsewhere torch emulates it
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def distributed_training(h: HardwareParams) -> dict[str, Any]:
    """fairseq's distributed_training block; the keys of a single process are fairseq's defaults.

    - GPUs of one node: the one fairseq process spawns a process per GPU and picks
      the rendezvous itself (a free port, or one derived from the SLURM job id).
    - Several nodes: fairseq runs once per node (:func:`launch_prefix`) and reads
      its node's rank from SLURM's environment (or torchrun's); they meet at
      distributed_port of the first node.
    - CPU processes: fairseq cannot spawn them (it counts CUDA devices), so the
      stage starts one per rank (:func:`process_overrides`), meeting on this machine.
    """
    block: dict[str, Any] = {"distributed_world_size": h.world_size, "nprocs_per_node": h.processes_per_node}
    if h.world_size > 1:
        block["distributed_backend"] = h.backend
    if h.nodes > 1:
        block["distributed_port"] = h.port
    if h.gpus == 0 and h.world_size > 1:
        block["distributed_init_method"] = f"tcp://127.0.0.1:{h.port}"
        block["distributed_no_spawn"] = True
    block["ddp_backend"] = "no_c10d"
    # layerdrop leaves some parameters without gradients in a step
    block["find_unused_parameters"] = True
    return block


def bf16_cpu_warning(cpuinfo: str) -> str | None:
    """A warning when ``cpuinfo`` (the text of /proc/cpuinfo) lists none of BF16_CPU_FLAGS."""
    if cpu_has_bf16(cpuinfo):
        return None
    return ("warning: pretrain.hardware.precision=bf16 on a CPU without bf16 instructions (/proc/cpuinfo lists none "
            f"of {', '.join(BF16_CPU_FLAGS)}): torch emulates bf16 there, usually slower than fp32; set "
            "pretrain.hardware.precision=fp32 or auto")


def cpu_has_bf16(cpuinfo: str) -> bool:
    """Whether ``cpuinfo`` (the text of /proc/cpuinfo) lists one of BF16_CPU_FLAGS."""
    flags = set(cpuinfo.split())
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(h: HardwareParams, *, cpuinfo: str | None, cuda_bf16: bool = False) -> HardwareParams:
    """``h`` with precision auto made concrete, and why, for this machine: ``cpuinfo`` is the
    text of /proc/cpuinfo (None where there is none: macOS, Windows), ``cuda_bf16`` whether
    its GPUs compute bf16. On the CPU, bf16 autocast only where the CPU has bf16
    instructions: elsewhere torch emulates bf16, many times slower than fp32. On GPUs,
    bf16 where they have it, else fairseq's fp16 (with loss scaling, the HuBERT recipe's)."""
    if h.precision != "auto":
        return h
    if h.gpus == 0:
        if cpuinfo is not None and cpu_has_bf16(cpuinfo):
            chosen, why = "bf16", f"this CPU lists {' or '.join(BF16_CPU_FLAGS)}: it computes bf16 natively"
        elif cpuinfo is not None:
            chosen, why = "fp32", f"this CPU lists none of {', '.join(BF16_CPU_FLAGS)}: torch would emulate bf16"
        else:
            chosen, why = "fp32", "no /proc/cpuinfo to show bf16 instructions: assuming none"
    else:
        chosen, why = ("bf16", "the GPUs compute bf16") if cuda_bf16 else ("fp16", "the GPUs lack bf16")
    print(f"pretrain.hardware.precision=auto: {chosen} ({why})", flush=True)
    return dataclasses.replace(h, precision=chosen)


def require_resolved(h: HardwareParams) -> None:
    """A fairseq config needs a concrete precision: auto is decided by check_devices on the training machine."""
    if h.precision == "auto":
        raise ValueError("pretrain.hardware.precision=auto is decided on the machine that trains: "
                         "pass the hardware params through check_devices first")


def check_devices(h: HardwareParams) -> HardwareParams:
    """Fail before launching when the machine lacks the GPUs the params ask for; warn when
    bf16 autocast is asked of a CPU without bf16 instructions. Returns ``h`` with precision
    auto decided for this machine (resolve_precision)."""
    if h.gpus == 0:
        cpuinfo_file = Path("/proc/cpuinfo")
        cpuinfo = cpuinfo_file.read_text(errors="replace") if cpuinfo_file.is_file() else None
        if h.cpu_autocast and cpuinfo is not None:
            warning = bf16_cpu_warning(cpuinfo)
            if warning:
                print(warning, flush=True)
        return resolve_precision(h, cpuinfo=cpuinfo)
    import torch

    found = torch.cuda.device_count()
    if found < h.gpus:
        raise ValueError(f"pretrain.hardware.gpus={h.gpus} but this machine has {found} CUDA GPU(s); "
                         "set pretrain.hardware.gpus to at most that (0 trains on the CPU)")
    # including_emulation=False: torch otherwise says yes on GPUs without bf16 units (V100, T4)
    native = h.precision == "auto" and torch.cuda.is_bf16_supported(including_emulation=False)
    return resolve_precision(h, cpuinfo=None, cuda_bf16=native)


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
    iterations; ``pretrain.<iteration>`` mirrors their keys, and a non-null value
    overrides the shared one for that iteration, e.g. ``iter2: {hardware:
    {precision: bf16}}``. An override naming a key that the shared blocks lack is
    an error (a typo must not be ignored).
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
        if value is None:
            continue  # not overridden
        if isinstance(value, dict) and isinstance(base[key], dict):
            out[key] = _merge(base[key], value, f"{where}.{key}", f"{base_where}.{key}")
        else:
            out[key] = value
    return out
