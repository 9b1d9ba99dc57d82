"""What a HuBERT pretraining run's log says: the plotted values, the audio per
update, the first-loss check, and the final metrics against chance and the
label prior. All fairseq loss values are in bits (the criterion divides by ln 2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hubert.fairseq.launcher import Record, RunRejected, TrainingError
from hubert.labels.quality import chance_bits
from hubert.pretrain.config import LabelSet

LOSS_TOLERANCE = 0.10  # first logged masked loss within 10% of log2(units + 4)
MASKED_LOSS = "loss_m_0"  # fairseq's hubert criterion, first label set
MASKED_ACCURACY = "correct_m_0"  # already divided by count_m_0 when fairseq reduces its logs
# plot name -> fairseq's key (hubert criterion and trainer); the report reads the plots by these
# names. loss_scale: fairseq logs it in fp16 runs only (the report's fp16 health)
PLOT_KEYS = {"loss": "loss", "loss_m": "loss_m_0", "loss_u": "loss_u_0", "features_pen": "loss_features_pen",
             "accuracy_m": "correct_m_0", "accuracy_u": "correct_u_0", "lr": "lr", "gnorm": "gnorm",
             "loss_scale": "loss_scale"}


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
    out = {name: s[key] for name, key in PLOT_KEYS.items() if key in s}
    if "loss_m" in out:
        out["loss_m_over_chance"] = out["loss_m"] / chance
    if record.tag == "train_inner":
        seconds = record.train_s - (previous.train_s if previous else 0.0)
        audio = record.audio_s - (previous.audio_s if previous else 0.0)
        if seconds > 0:
            out["audio_s_per_s"] = audio / seconds
    return out


# ---------------------------------------------------------------- loss check
class LossSanityError(RunRejected):
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


def record_check(labels: LabelSet, dict_file: str | Path) -> Callable[[Record, str, bool], None]:
    """The launcher's per-record hook for pretraining: every record must carry the
    masked loss, and a fresh run's first one must sit at the chance level
    (:func:`check_first_loss`)."""

    def check(record: Record, line: str, first: bool) -> None:
        loss_m = _stat(record, MASKED_LOSS, line)
        if first:
            problem = check_first_loss(loss_m, labels.units_in_labels, labels.units, dict_file)
            if problem:
                raise LossSanityError(f"pretraining stopped at update {record.step}: {problem}")

    return check


def _stat(record: Record, key: str, line: str | None = None) -> float:
    """A value a record must have; its absence is an error naming the record, never a NaN."""
    if key not in record.stats:
        where = f": {line}" if line is not None else f" (keys: {', '.join(sorted(record.stats))})"
        raise TrainingError(f"fairseq's {record.tag} record at update {record.step} has no {key}{where}. Is the "
                            "criterion fairseq's hubert criterion with pred_masked_weight > 0?")
    return record.stats[key]


# ---------------------------------------------------------------- final metrics
def final_metrics(records: list[Record], labels: LabelSet, batch: dict[str, float], frame_s: float) -> dict:
    """metrics/pretrain_<iteration>.json: numbers only."""
    train = [r for r in records if r.tag == "train_inner"]
    valid = [r for r in records if r.tag == "valid"]
    if not train:
        raise TrainingError("fairseq logged no train_inner record: nothing to summarise")
    chance = labels.chance_bits
    first, last = _stat(train[0], MASKED_LOSS), _stat(train[-1], MASKED_LOSS)
    out: dict[str, Any] = {
        "labels": {
            "units": labels.units,
            "units_in_labels": labels.units_in_labels,
            "label_rate": labels.label_rate,
            "chance_bits": chance,
            "prior_entropy_bits": labels.prior_entropy_bits,
            "bigram_entropy_bits": labels.bigram_entropy_bits,
        },
        "loss_m": {
            "first": first,
            "last": last,
            "first_over_chance": first / chance,
            "last_over_chance": last / chance,
            "last_minus_prior_bits": last - labels.prior_entropy_bits,
        },
        "accuracy_m": {"last": _stat(train[-1], MASKED_ACCURACY)},
        "training": {
            "updates": train[-1].step,
            "wall_time_s": train[-1].train_s,
            "audio_hours": train[-1].audio_s / 3600,
            "audio_s_per_s": train[-1].audio_s / train[-1].train_s if train[-1].train_s > 0 else 0.0,
            "audio_s_per_update": float(np.mean([audio_per_update_s(r.stats, frame_s) for r in train])),
        },
        "batch": dict(batch),
    }
    for tag in sorted({r.tag for r in records if r.tag.startswith("valid")}):
        last_valid = [r for r in records if r.tag == tag][-1]
        name = "valid_last" + tag[len("valid"):]  # valid_last, valid_last_en, valid_last_zh
        out["loss_m"][name] = _stat(last_valid, MASKED_LOSS)
        out["accuracy_m"][name] = _stat(last_valid, MASKED_ACCURACY)
    if valid:
        # held-out voices against the training batches: a gap that keeps growing is overfitting
        out["loss_m"]["valid_minus_train_bits"] = out["loss_m"]["valid_last"] - last
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
