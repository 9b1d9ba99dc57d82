"""The ``finetune`` params section: the hubert_ctc recipe shared by every variant,
and the variants themselves (what each starts from, on which languages, with
or without a language-ID token)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hubert.params import from_dict

WEIGHTS = ("pretrained", "random")
_INIT = re.compile(r"^(pretrain/iter[12]|finetune/[A-Za-z0-9_.-]+)$")


@dataclass(frozen=True)
class CtcModelParams:
    """``finetune.model``: fairseq's hubert_ctc keys of the same names
    (examples/hubert/config/finetune/base_10h.yaml). feature_grad_mult 0 freezes
    the CNN; the transformer stays frozen for the first freeze_finetune_updates;
    mask_channel_length must be below the model's encoder_embed_dim."""

    apply_mask: bool
    mask_prob: float
    mask_length: int
    mask_channel_prob: float
    mask_channel_length: int
    layerdrop: float
    dropout: float
    attention_dropout: float
    activation_dropout: float
    dropout_input: float
    final_dropout: float
    feature_grad_mult: float
    freeze_finetune_updates: int

    def __post_init__(self) -> None:
        for name in ("mask_prob", "mask_channel_prob", "layerdrop", "dropout", "attention_dropout",
                     "activation_dropout", "dropout_input", "final_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"finetune.model.{name}={getattr(self, name)} must be in [0, 1]")
        if self.freeze_finetune_updates < 0:
            raise ValueError(f"finetune.model.freeze_finetune_updates={self.freeze_finetune_updates} must be >= 0")


@dataclass(frozen=True)
class CtcOptimizationParams:
    """``finetune.optimization``: Adam with fairseq's tri-stage schedule (warm-up,
    hold, exponential decay to final_lr_scale x lr, as phase_ratio of max_update)."""

    lr: float
    max_update: int
    phase_ratio: tuple
    final_lr_scale: float
    adam_betas: tuple[float, float]
    adam_eps: float
    clip_norm: float

    def __post_init__(self) -> None:
        if self.max_update <= 0:
            raise ValueError(f"finetune.optimization.max_update={self.max_update} must be positive")
        if len(self.phase_ratio) != 3 or min(self.phase_ratio) < 0 or abs(sum(self.phase_ratio) - 1) > 1e-6:
            raise ValueError(f"finetune.optimization.phase_ratio={list(self.phase_ratio)}: three non-negative "
                             "fractions (warm-up, hold, decay) that sum to 1")
        if not 0 < self.final_lr_scale <= 1:
            raise ValueError(f"finetune.optimization.final_lr_scale={self.final_lr_scale} must be in (0, 1]")


@dataclass(frozen=True)
class CtcBatchParams:
    """``finetune.batch``: audio samples per GPU and forward pass (whole utterances,
    padded, never cropped: the transcript must match the audio)."""

    max_tokens: int
    update_freq: int

    def __post_init__(self) -> None:
        if self.max_tokens <= 0 or self.update_freq < 1:
            raise ValueError(f"finetune.batch: max_tokens={self.max_tokens} must be positive and update_freq="
                             f"{self.update_freq} >= 1")


@dataclass(frozen=True)
class CtcScheduleParams:
    """``finetune.schedule``: a train record every log_interval updates, a
    validation and a checkpoint (the best by valid character error is kept) every
    validate_interval_updates."""

    log_interval: int
    validate_interval_updates: int

    def __post_init__(self) -> None:
        if self.log_interval <= 0 or self.validate_interval_updates <= 0:
            raise ValueError("finetune.schedule.log_interval and validate_interval_updates must be positive")


@dataclass(frozen=True)
class Variant:
    """One entry of ``finetune.variants``.

    init: ``pretrain/iter1`` or ``pretrain/iter2`` (a pretrained checkpoint) or
    ``finetune/<variant>`` (continue a fine-tuned model: language adaptation);
    weights: ``pretrained``, or ``random`` for a same-shape model trained from
    scratch (fairseq's no_pretrained_weights; only the shape of ``init`` is used);
    languages: the fine-tuning and validation data; lid: a language-ID token
    (``<en>`` / ``<zh>``) as the first target; max_update: this variant's updates
    (null: finetune.optimization.max_update)."""

    init: str
    languages: tuple = ("en", "zh")
    weights: str = "pretrained"
    lid: bool = False
    max_update: int | None = None

    @property
    def parent(self) -> str | None:
        """The variant this one continues, or None for a pretrained (or random) start."""
        return self.init.split("/", 1)[1] if self.init.startswith("finetune/") else None


@dataclass(frozen=True)
class FinetuneParams:
    seed: int
    model: CtcModelParams
    optimization: CtcOptimizationParams
    batch: CtcBatchParams
    schedule: CtcScheduleParams


def finetune_params(section: dict[str, Any]) -> FinetuneParams:
    return from_dict(FinetuneParams, {k: v for k, v in section.items() if k != "variants"}, "finetune")


def variants(section: dict[str, Any]) -> dict[str, Variant]:
    """``finetune.variants``, checked: a known start, known weights, no loop of
    variants continuing each other, and adaptation only within the parent's label set."""
    raw = section.get("variants") or {}
    out = {name: from_dict(Variant, spec, f"finetune.variants.{name}") for name, spec in raw.items()}
    for name, v in out.items():
        where = f"finetune.variants.{name}"
        if not _INIT.match(v.init):
            raise ValueError(f"{where}.init={v.init!r}: use pretrain/iter1, pretrain/iter2 or finetune/<variant>")
        if v.weights not in WEIGHTS:
            raise ValueError(f"{where}.weights={v.weights!r}: use one of {', '.join(WEIGHTS)}")
        if not isinstance(v.languages, tuple) or not v.languages or not all(
                isinstance(lang, str) for lang in v.languages):
            raise ValueError(f"{where}.languages={v.languages!r}: give a list of languages, e.g. [en, zh] or [zh]")
        if not isinstance(v.lid, bool):
            raise ValueError(f"{where}.lid={v.lid!r}: true or false")
        if v.max_update is not None and v.max_update <= 0:
            raise ValueError(f"{where}.max_update={v.max_update} must be positive (or null)")
        seen, at = [name], v
        while at.parent is not None:
            if at.parent not in out:
                raise ValueError(f"{where}: starts from variant {at.parent!r}, which finetune.variants does not "
                                 f"declare (variants: {', '.join(sorted(out))})")
            if at.parent in seen:
                raise ValueError(f"{where}: variants continue each other in a loop: {' -> '.join(seen + [at.parent])}")
            seen.append(at.parent)
            at = out[at.parent]
        if v.parent is not None:
            parent = out[v.parent]
            if parent.lid != v.lid:
                raise ValueError(f"{where}.lid={v.lid} but its start {v.parent} has lid={parent.lid}: an adapted "
                                 "model keeps its parent's output vocabulary; set the same lid")
            if v.weights != "pretrained":
                raise ValueError(f"{where}.weights={v.weights!r}: a variant that continues another takes its "
                                 "weights; weights: random only applies to pretrain/* starts")
    return out
