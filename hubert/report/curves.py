"""Training curves for the report, from the pipeline's DVCLive plots or from any
fairseq HuBERT training log.

A :class:`Curves` maps a split (``train``, ``valid``, ``valid_en``, ...) to named
series (``loss_m``, ``accuracy_m``, ``features_pen``, ``lr``, ``loss_scale``, ...),
each a :class:`Curve` of values against updates. fairseq logs every loss in bits.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hubert.fairseq.launcher import Record, parse_log_line
from hubert.pretrain.metrics import PLOT_KEYS

# fairseq's keys -> the report's names: those of the pipeline's DVCLive plots, and updates per
# second (a foreign log's only throughput)
FAIRSEQ_KEYS = {key: name for name, key in PLOT_KEYS.items()} | {"ups": "ups"}
# what explaining a log needs from its train_inner records (fairseq names)
REQUIRED_KEYS = ("num_updates", "loss_m_0", "correct_m_0")


@dataclass(frozen=True)
class Curve:
    steps: np.ndarray  # (n,) updates
    values: np.ndarray  # (n,)

    @property
    def first(self) -> float:
        return float(self.values[0])

    @property
    def last(self) -> float:
        return float(self.values[-1])

    def at(self, step: float) -> float:
        """The value logged nearest to ``step``."""
        return float(self.values[int(np.argmin(np.abs(self.steps - step)))])


@dataclass
class Curves:
    splits: dict[str, dict[str, Curve]] = field(default_factory=dict)
    overflows: int = 0  # fp16 "gradient overflow detected" notes in a raw log
    min_loss_scale_reached: bool = False  # fairseq gave up: "Minimum loss scale reached"

    def get(self, split: str, name: str) -> Curve | None:
        return self.splits.get(split, {}).get(name)

    def valid_splits(self) -> list[str]:
        return sorted(s for s in self.splits if s.startswith("valid"))

    def __bool__(self) -> bool:
        return any(self.splits.values())


class LogError(ValueError):
    """A log that cannot be explained: names the file and what it lacks."""


# ---------------------------------------------------------------- DVCLive (the pipeline's own runs)
def from_dvclive(plots_dir: str | Path) -> Curves:
    """``<plots_dir>/<split>/<name>.tsv`` as written by DVCLive (columns step, <name>)."""
    curves = Curves()
    root = Path(plots_dir)
    if not root.is_dir():
        return curves
    for tsv in sorted(root.glob("*/*.tsv")):
        with tsv.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows or tsv.stem not in rows[0]:
            continue
        steps = np.array([float(r["step"]) for r in rows])
        values = np.array([float(r[tsv.stem]) for r in rows])
        curves.splits.setdefault(tsv.parent.name, {})[tsv.stem] = Curve(steps, values)
    return curves


# ---------------------------------------------------------------- raw fairseq logs
# fairseq's "simple" progress format: "epoch 001:    100 / 2000 loss=6.7, loss_m_0=6.6, ..."
# and " | "-separated "key value" pairs in its validation lines
_SIMPLE_TAG = re.compile(r"[|\[]\s*(train_inner|train|valid\w*)\s*[|\]]\s*(?:\[INFO\])?\s*-?\s*(.*)$")
_KEY_EQ = re.compile(r"([A-Za-z_][\w]*)=([^,\s]+)")
_KEY_SPACE = re.compile(r"^\s*([A-Za-z_][\w]*) ([^\s|]+)\s*$")
_OVERFLOW = re.compile(r"gradient overflow detected|overflow detected, setting loss scale", re.IGNORECASE)
_CONFIG_INT = {name: re.compile(rf"(?<!\w)['\"]?{name}['\"]?\s*[:=]\s*\[?\s*(\d+)") for name in
               ("distributed_world_size", "max_tokens", "update_freq", "label_rate")}
_CONFIG_BOOL = {name: re.compile(rf"(?<!\w)['\"]?{name}['\"]?\s*[:=]\s*(True|False|true|false)") for name in
                ("fp16", "bf16")}


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _simple_record(line: str) -> tuple[str, dict[str, float]] | None:
    match = _SIMPLE_TAG.search(line)
    if not match:
        return None
    tag, rest = match.group(1), match.group(2)
    stats: dict[str, float] = {}
    for key, value in _KEY_EQ.findall(rest):
        if (v := _float(value)) is not None:
            stats[key] = v
    for part in rest.split(" | "):
        kv = _KEY_SPACE.match(part)
        if kv and (v := _float(kv.group(2))) is not None:
            stats[kv.group(1)] = v
    prefix = f"{tag}_" if tag != "train_inner" else ""
    stats = {k[len(prefix):] if prefix and k.startswith(prefix) else k: v for k, v in stats.items()}
    return (tag, stats) if "num_updates" in stats else None


def read_log(path: str | Path) -> tuple[list[tuple[str, dict[str, float]]], Curves, dict[str, object]]:
    """(records, curves, config) of one training log: fairseq's ``hydra_train.log`` or
    console output (json or simple progress format), or this pipeline's
    ``train_log.jsonl``. ``config`` holds what the log's config dump says about the
    batch and precision (empty when the log has none)."""
    path = Path(path)
    if not path.is_file():
        raise LogError(f"{path}: no such file; give the training log (hydra_train.log, the console output, "
                       "or train_log.jsonl)")
    text = path.read_text(encoding="utf-8", errors="replace")
    records: list[tuple[str, dict[str, float]]] = []
    overflows = 0
    min_scale = False
    for line in text.splitlines():
        if line.startswith("{") and '"stats"' in line:  # our train_log.jsonl
            try:
                r = Record.from_json(line)
            except (json.JSONDecodeError, TypeError):
                continue
            records.append((r.tag, {**r.stats, "num_updates": float(r.step)}))
            continue
        parsed = parse_log_line(line) or _simple_record(line)
        if parsed:
            records.append(parsed)
        elif _OVERFLOW.search(line):
            overflows += 1
        elif "Minimum loss scale reached" in line:
            min_scale = True
    config: dict[str, object] = {}
    for name, pattern in _CONFIG_INT.items():
        if match := pattern.search(text):
            config[name] = int(match.group(1))
    for name, pattern in _CONFIG_BOOL.items():
        if match := pattern.search(text):
            config[name] = match.group(1).lower() == "true"
    curves = from_records(records)
    curves.overflows, curves.min_loss_scale_reached = overflows, min_scale
    return records, curves, config


def from_records(records: list[tuple[str, dict[str, float]]]) -> Curves:
    """Curves of (tag, stats) records: train_inner -> ``train``, each valid subset under its tag."""
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for tag, stats in records:
        if tag == "train" or "num_updates" not in stats:
            continue  # end-of-epoch averages repeat the train_inner records
        split = "train" if tag == "train_inner" else tag
        for key, name in FAIRSEQ_KEYS.items():
            if key in stats:
                series.setdefault(split, {}).setdefault(name, []).append((stats["num_updates"], stats[key]))
    curves = Curves()
    for split, names in series.items():
        for name, points in names.items():
            steps, values = zip(*points, strict=True)
            curves.splits.setdefault(split, {})[name] = Curve(np.array(steps), np.array(values))
    return curves


def missing_keys(records: list[tuple[str, dict[str, float]]]) -> list[str]:
    """The fairseq keys explaining needs that the log's train records lack."""
    train = [stats for tag, stats in records if tag == "train_inner"]
    if not train:
        return list(REQUIRED_KEYS)
    return [k for k in REQUIRED_KEYS if not any(k in s for s in train)]


def non_finite(curves: Curves) -> list[str]:
    """``split/name`` of every loss curve holding a NaN or an infinity."""
    return [f"{split}/{name}" for split, names in curves.splits.items() for name, c in names.items()
            if name.startswith("loss") and name != "loss_scale" and not all(math.isfinite(v) for v in c.values)]
