"""Plain-language verdicts and flags, each computed from the run's own numbers and
quoting the number it rests on.

A :class:`Finding` with ``flag=True`` is something that looks wrong; its ``code``
is stable (tests and readers can look for it). Thresholds are module constants
with the reason next to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hubert.labels.quality import chance_bits
from hubert.pretrain.config import REFERENCE_GPUS, REFERENCE_MAX_TOKENS
from hubert.report.curves import Curves, non_finite

# the pipeline's own first-loss check (hubert.pretrain.metrics.LOSS_TOLERANCE) uses the same 10%
FIRST_LOSS_TOLERANCE = 0.10
# fairseq's Base recipe logs every 200 updates and warms up for 32k, so its first record is still at
# chance; a log that starts later than this is a resumed run's (checkpoints are thousands of updates apart)
FIRST_STEP_MAX = 1000
# masked accuracy must gain at least this much between the first and last tenth of the run
ACCURACY_GAIN_MIN = 0.01
# PNMI within this of its shuffled floor carries no phone information
PNMI_FLOOR_MARGIN = 0.02
# below half the reference batch the published curves are not comparable update for update
BATCH_RATIO_MIN = 0.5
# fewer hours than this fraction of the largest language after balancing: XLS-R's alpha 0.5
# brings even a 16:1 corpus to 4:1
LANGUAGE_HOURS_RATIO_MIN = 0.25
# a validation gap that grew by more than this many bits over its last three points, steadily
GAP_GROWTH_BITS = 0.5
# fairseq's fp16 loss scale starts at 128 and doubles after every 128 clean updates: below 1
# it has halved at least 7 times more than it grew, i.e. the gradients overflow steadily
LOSS_SCALE_MIN = 1.0


@dataclass(frozen=True)
class Finding:
    topic: str
    text: str
    flag: bool = False
    code: str = ""


def section_of(topic: str) -> str:
    """The report section a finding's topic belongs to (its flags are shown there)."""
    if topic.startswith(("labels", "layer sweep")):
        return "labels"
    if topic.startswith("downstream"):
        return "downstream"
    if topic.startswith(("balance", "lengths")):
        return "data"
    return "pretraining"


@dataclass(frozen=True)
class Reference:
    """A published HuBERT run's masked loss and accuracy at a number of updates."""

    name: str
    source: str
    units: int
    updates: int
    loss_m: float
    accuracy_m: float | None = None

    @property
    def over_chance(self) -> float:
        return self.loss_m / chance_bits(self.units)


ISSUE_4907 = "https://github.com/facebookresearch/fairseq/issues/4907"
ISSUE_5526 = "https://github.com/facebookresearch/fairseq/issues/5526"
# LibriSpeech 960 h, HuBERT Base, 32 GPUs x 1.4M samples (fairseq issue 4907)
REFERENCES = {
    1: (Reference("LibriSpeech 960 h, HuBERT Base, K=100 MFCC", ISSUE_4907, 100, 250_000, 3.33, 0.365),
        Reference("LibriSpeech 960 h, HuBERT Base, K=100 MFCC", ISSUE_4907, 100, 400_000, 3.14, 0.390)),
    2: (Reference("LibriSpeech 960 h, HuBERT Base, K=500 layer 6", ISSUE_4907, 500, 250_000, 3.71, 0.383),
        Reference("LibriSpeech 960 h, HuBERT Base, K=500 layer 6", ISSUE_4907, 500, 400_000, 3.42, 0.417)),
}
# the seed's run (fairseq issue 5526): zh + en, 4 GPUs x 1.4M, no update_freq; total loss
# (masked loss + feature penalty) first -> last
SEED_RUN = {1: (100, 6.7, 3.3), 2: (500, 11.2, 4.0)}


def _points(x: float) -> str:
    """A difference of error rates (fractions) in percentage points."""
    return f"{100 * x:.1f}"


# ---------------------------------------------------------------- pretraining
def pretrain_findings(topic: str, units: int, curves: Curves, prior: float | None = None,
                      iteration: int | None = None) -> list[Finding]:
    """Verdicts on one pretraining run's curves: the start against chance log2(K+4),
    the end against the label prior H(z), accuracy, published references,
    NaN / fp16 health and the train / valid gap."""
    out: list[Finding] = []
    loss_m = curves.get("train", "loss_m")
    if loss_m is None:
        return [Finding(topic, "no masked loss (loss_m_0) was logged: nothing to judge", True, "no_masked_loss")]
    chance = chance_bits(units)
    pen = curves.get("train", "features_pen")
    first_step = float(loss_m.steps[0])
    if first_step > FIRST_STEP_MAX:
        out.append(Finding(topic, f"the log starts at update {first_step:.0f}: its first loss cannot be compared "
                                  "with the chance level (a resumed run? give the log from the first update)"))
    else:
        start = f"{loss_m.first:.2f} bits of masked loss"
        if pen is not None:
            start += f" + {pen.first:.2f} bits of feature penalty = {loss_m.first + pen.first:.2f}"
        off = (loss_m.first - chance) / chance
        if abs(off) <= FIRST_LOSS_TOLERANCE:
            out.append(Finding(topic, f"began at {start}: the chance level of {units + 4} classes "
                                      f"(log2({units} + 4) = {chance:.2f} bits), as expected", False,
                               "start_at_chance"))
        else:
            out.append(Finding(topic, f"began at {start}, {abs(off):.0%} {'above' if off > 0 else 'below'} the chance "
                                      f"level log2({units} + 4) = {chance:.2f} bits: the labels and the dictionary (K) "
                                      "do not belong together, or K is not what was given", True,
                               "first_loss_off_chance"))
    end = f"ended at {loss_m.last:.2f} bits of masked loss after {loss_m.steps[-1]:.0f} updates " \
          f"({loss_m.last / chance:.2f} of chance)"
    if prior is None:
        out.append(Finding(topic, f"{end}; the label prior H(z) is unknown (give the labels to compare with it)"))
    elif loss_m.last < prior:
        out.append(Finding(topic, f"{end}, {prior - loss_m.last:.2f} bits below the label prior H(z) = "
                                  f"{prior:.2f}: the model predicts masked units from context, not only from their "
                                  "frequencies", False, "below_prior"))
    else:
        out.append(Finding(topic, f"{end}, not below the label prior H(z) = {prior:.2f} bits: the model has "
                                  "learned no more than the units' frequencies (too few updates, or a learning "
                                  "rate it cannot train with)", True, "not_below_prior"))
    acc = curves.get("train", "accuracy_m")
    if acc is not None and len(acc.values) >= 2:
        tenth = max(1, len(acc.values) // 10)
        early, late = float(np.mean(acc.values[:tenth])), float(np.mean(acc.values[-tenth:]))
        if late - early < ACCURACY_GAIN_MIN:
            out.append(Finding(topic, f"masked accuracy is not rising ({early:.3f} in the first tenth of the log, "
                                      f"{late:.3f} in the last)", True, "accuracy_not_rising"))
        else:
            out.append(Finding(topic, f"masked accuracy rose from {early:.3f} to {late:.3f} (means of the first and "
                                      f"last tenth of the log; chance {1 / (units + 4):.3f})", False,
                               "accuracy_rising"))
    for ref in REFERENCES.get(iteration, ()) if iteration else ():
        if ref.units == units and ref.updates == max(r.updates for r in REFERENCES[iteration]):
            out.append(Finding(topic, f"for scale: HuBERT Base on {ref.name.split(',')[0]} reached "
                                      f"{ref.loss_m:.2f} bits ({ref.over_chance:.2f} of chance) after "
                                      f"{ref.updates // 1000}k updates of a 32 x 1.4M batch ({ref.source}); this run "
                                      f"{loss_m.last / chance:.2f} after {loss_m.steps[-1]:.0f}", False, "reference"))
    bad = non_finite(curves)
    if bad:
        out.append(Finding(topic, f"NaN or infinite values in {', '.join(bad)}", True, "non_finite"))
    scale = curves.get("train", "loss_scale")
    if curves.min_loss_scale_reached or (scale is not None and scale.last < LOSS_SCALE_MIN):
        where = "fairseq reported 'Minimum loss scale reached'" if curves.min_loss_scale_reached else \
            f"the fp16 loss scale fell to {scale.last:g} (max {scale.values.max():g})"
        out.append(Finding(topic, f"{where}: fp16 gradients overflow steadily; train in bf16 or fp32, or lower "
                                  "the learning rate", True, "loss_scale_collapse"))
    elif scale is not None:
        out.append(Finding(topic, f"fp16 loss scale healthy: {scale.values.min():g} at its lowest, "
                                  f"{curves.overflows} overflow notes in the log", False, "loss_scale_ok"))
    out.extend(_gap_findings(topic, curves))
    return out


def _gap_findings(topic: str, curves: Curves) -> list[Finding]:
    train, valid = curves.get("train", "loss_m"), curves.get("valid", "loss_m")
    if train is None or valid is None:
        return []
    gaps = np.array([v - train.at(s) for s, v in zip(valid.steps, valid.values, strict=True)])
    langs = ", ".join(f"{s[len('valid_'):]} {curves.get(s, 'loss_m').last:.2f}" for s in curves.valid_splits()
                      if s != "valid" and curves.get(s, "loss_m") is not None)
    per_lang = f" (held-out masked loss by language: {langs})" if langs else ""
    if len(gaps) >= 3 and np.all(np.diff(gaps[-3:]) > 0) and gaps[-1] - gaps[-3] > GAP_GROWTH_BITS:
        return [Finding(topic, f"the valid - train gap keeps widening: {gaps[-3]:.2f} -> {gaps[-2]:.2f} -> "
                               f"{gaps[-1]:.2f} bits over the last three validations{per_lang}: overfitting the "
                               "training voices (more data or voices, more dropout, fewer updates)", True,
                        "gap_widening")]
    return [Finding(topic, f"held-out voices: valid masked loss {valid.last:.2f} bits, {gaps[-1]:+.2f} against "
                           f"training{per_lang}", False, "gap")]


# ---------------------------------------------------------------- batch and balance
def batch_findings(topic: str, batch: dict, on_gpus: bool = True) -> list[Finding]:
    """The effective batch against fairseq's reference 32 x 1.4M, and the update_freq
    that would reach it on the run's own processes (``batch['workers']``: GPUs, or CPU
    processes when ``on_gpus`` is false)."""
    workers = max(int(batch["workers"]), 1)
    reference = REFERENCE_GPUS * REFERENCE_MAX_TOKENS
    ratio = batch["ratio_to_reference"]
    need = math.ceil(reference / (workers * batch["max_tokens"]))
    unit = ("GPU" if on_gpus else "process") + ("" if workers == 1 else "s" if on_gpus else "es")
    text = (f"effective batch {batch['workers']} x {batch['max_tokens']:,} samples x update_freq "
            f"{batch['update_freq']} = {batch['hours_per_update'] * 60:.2f} min of audio per update, "
            f"{ratio:.3g} of fairseq's {REFERENCE_GPUS} x {REFERENCE_MAX_TOKENS:,}; on {workers} "
            f"{unit} update_freq {need} would match it")
    if ratio < BATCH_RATIO_MIN:
        return [Finding(topic, text + " (published curves are not comparable update for update)", True,
                        "batch_far_below_reference")]
    return [Finding(topic, text, False, "batch")]


def balance_findings(balance: dict) -> list[Finding]:
    hours = balance.get("pretrain", {}).get("hours_after", {})
    if len(hours) < 2:
        return []
    top = max(hours.values())
    shares = ", ".join(f"{lang} {h:.2f} h" for lang, h in sorted(hours.items()))
    low = [lang for lang, h in hours.items() if h < LANGUAGE_HOURS_RATIO_MIN * top]
    if low:
        return [Finding("balance", f"after balancing: {shares}; {', '.join(sorted(low))} has less than "
                                   f"{LANGUAGE_HOURS_RATIO_MIN:.0%} of the largest language's hours: lower "
                                   "balance.alpha (0 = uniform) or add data", True, "language_underrepresented")]
    before = balance["pretrain"].get("hours_before", {})
    was = ", ".join(f"{lang} {h:.2f} h" for lang, h in sorted(before.items()))
    return [Finding("balance", f"pretraining hours after balancing: {shares} (before: {was})", False, "balance")]


def length_findings(balance: dict, letters: dict | None) -> list[Finding]:
    """What the length limits of the training stages left out (balance.length_policy skip):
    fine-tuning's utterances from the letters stage, pretraining's from the balance stage."""
    lengths = balance.get("lengths")
    if not lengths:
        return []
    limits = lengths["limits_s"]
    span = f"the corpus's utterances run {lengths['shortest_s']:.2f}-{lengths['longest_s']:.2f} s"
    parts = []
    splits = (letters or {}).get("splits", {})
    for split, name in (("finetune", "fine-tuning"), ("valid", "validation")):
        per = splits.get(split, {})
        long, short = (sum(c.get(f"skipped_{k}", 0) for c in per.values()) for k in ("too_long", "too_short"))
        if long:
            parts.append(f"{long} {name} utterance(s) longer than finetune.batch.max_tokens "
                         f"({limits['finetune_max']:.2f} s)")
        if short:
            parts.append(f"{short} {name} utterance(s) shorter than fine-tuning's masking needs "
                         f"({limits['finetune_min']:.2f} s)")
    pretrain_short = {s: sum(lengths[f"pretrain_{s}"]["too_short"].values()) for s in ("train", "valid")}
    if any(pretrain_short.values()):
        parts.append(f"{pretrain_short['train']} train and {pretrain_short['valid']} valid utterance(s) shorter "
                     f"than pretrain.batch.min_sample_size ({limits['pretrain_min']:.2f} s), left out of pretraining")
    long_tests = sum(lengths["test_decoded_longer_than_max_tokens"].values())
    tested = f"; the test set is decoded whole ({long_tests} utterance(s) longer than max_tokens)" if long_tests \
        else ""
    if not parts:
        return [Finding("lengths", f"every utterance is within the training stages' length limits ({span}){tested}",
                        False, "lengths")]
    return [Finding("lengths", f"left out by balance.length_policy=skip: {'; '.join(parts)} ({span}){tested}; "
                               "raise the limits to admit them", True, "utterances_left_out")]


# ---------------------------------------------------------------- labels
def label_findings(labels: dict[int, dict], layers: dict | None) -> list[Finding]:
    """Label quality per iteration (PNMI against its shuffled floor), the layer sweep
    against MFCC at the same K and frame rate, and whether iteration 2's labels beat
    MFCC's."""
    out: list[Finding] = []
    for it, m in sorted(labels.items()):
        topic = f"labels, iteration {it}"
        if "pnmi_conditional" not in m:
            out.append(Finding(topic, f"K={m['n_clusters']} at {m['label_rate']:g} Hz: no phone alignments of the "
                                      "valid utterances, so no PNMI or purity (import alignments with "
                                      "corpus.imports[].alignments)", False, "no_alignments"))
            continue
        pnmi, floor = m["pnmi_conditional"], m["pnmi_conditional_shuffled"]
        langs = ", ".join(f"{lang} {v['pnmi']:.3f}" for lang, v in sorted(m.get("per_language", {}).items()))
        what = f"K={m['n_clusters']} at {m['label_rate']:g} Hz: PNMI {pnmi:.3f}" + (f" ({langs})" if langs else "")
        if "toneless" in m:  # tonal Mandarin phones: the toneless inventory's score beside it
            zh = m["toneless"].get("per_language", {}).get("zh", {}).get("pnmi")
            what += (f" with Mandarin tones; {m['toneless']['pnmi_conditional']:.3f} without them"
                     + (f" (zh {zh:.3f})" if zh is not None else ""))
        if pnmi <= floor + PNMI_FLOOR_MARGIN:
            out.append(Finding(topic, f"{what}, not above its shuffled floor {floor:.3f}: the units carry no "
                                      "phone information (features or k-means broken)", True, "pnmi_at_floor"))
        else:
            out.append(Finding(topic, f"{what}; shuffled floor {floor:.3f}, phone purity {m['phone_purity']:.3f}, "
                                      f"cluster purity {m['cluster_purity']:.3f}", False, "pnmi"))
    if layers and "best_pnmi" in layers:
        mfcc = layers["mfcc_at_layer_rate"]["pnmi_conditional"]
        best, spread = layers["best_pnmi"], layers.get("seed_spread", 0.0)
        diff = best - mfcc
        side = "above" if diff > spread else "below" if diff < -spread else "level with"
        out.append(Finding("layer sweep", f"the iteration-1 model's best layer ({layers['best_layer']}) scores PNMI "
                                          f"{best:.3f}, {side} MFCC's {mfcc:.3f} at the same K={layers['n_clusters']} "
                                          f"and {layers['label_rate']:g} Hz ({diff:+.3f}; k-means seed spread "
                                          f"{spread:.3f})" + _toneless_sweep(layers), False, "layer_vs_mfcc"))
        it2 = labels.get(2)
        same_k_and_rate = it2 and it2["n_clusters"] == layers["n_clusters"] and \
            it2["label_rate"] == layers["label_rate"]
        if same_k_and_rate and "pnmi_conditional" in it2:
            pnmi2 = it2["pnmi_conditional"]
            if pnmi2 > mfcc + spread:
                text = (f"iteration-2 labels are more phone-like than MFCC labels at the same K and frame rate "
                        f"(PNMI {pnmi2:.3f} vs {mfcc:.3f}): the second iteration has better targets, as HuBERT "
                        "intends")
                code = "iter2_beats_mfcc"
            else:
                text = (f"iteration-2 labels are {'less' if pnmi2 < mfcc - spread else 'no more'} phone-like than "
                        f"MFCC labels at the same K and frame rate (PNMI {pnmi2:.3f} vs {mfcc:.3f}): iteration 2 is "
                        "not expected to help. Sweep iteration 1's saved checkpoints (stages/layers.py "
                        "--checkpoint): while its best layer still rises with updates, train longer; once it "
                        "has levelled off, the model or the data is the limit, not the schedule")
                code = "iter2_not_better"
            out.append(Finding("labels, iteration 2", text, False, code))
    return out


def _toneless_sweep(layers: dict) -> str:
    if "toneless_best_pnmi" not in layers:
        return ""
    mfcc = layers["mfcc_at_layer_rate"]["toneless_pnmi_conditional"]
    return (f"; without Mandarin tones the best layer ({layers['toneless_best_layer']}) scores "
            f"{layers['toneless_best_pnmi']:.3f} against MFCC's {mfcc:.3f} "
            f"({layers['toneless_best_minus_mfcc_at_layer_rate']:+.3f})")


# ---------------------------------------------------------------- downstream
METRIC_NAMES = {"zh_cer": "zh CER", "en_wer": "en WER", "mix_mer": "mixed error rate"}


def downstream_findings(evaluation: dict) -> list[Finding]:
    """Paired comparisons (``compare.<a>_minus_<b>``) in percentage points with their intervals,
    and any model no better than the constant-output floor."""
    out: list[Finding] = []
    for pair, metrics in evaluation.get("compare", {}).items():
        a, b = pair.split("_minus_")
        for key, d in metrics.items():
            name = METRIC_NAMES.get(key, key)
            interval = f"[{_points(-d['high'])}, {_points(-d['low'])}]"
            if d["high"] < 0:
                out.append(Finding("downstream", f"{a} beats {b} by {_points(-d['difference'])} pp of {name} "
                                                 f"{interval}", False, "beats"))
            elif d["low"] > 0:
                out.append(Finding("downstream", f"{a} is worse than {b} by {_points(d['difference'])} pp of "
                                                 f"{name} [{_points(d['low'])}, {_points(d['high'])}]", False,
                                   "worse"))
            else:
                out.append(Finding("downstream", f"{a} and {b} are not distinguishable in {name} "
                                                 f"({_points(-d['difference'])} pp, interval {interval} "
                                                 "includes 0)", False, "tie"))
    floors = evaluation.get("floors", {})
    for variant, m in evaluation.items():
        if variant in ("floors", "compare") or not isinstance(m, dict):
            continue
        failed = []
        for lang, metric in (("zh", "cer"), ("en", "wer")):
            rate = m.get(lang, {}).get(metric, {}).get("rate")
            floor = floors.get(lang, {}).get(f"constant_{metric}")
            if rate is not None and floor is not None and rate >= floor:
                failed.append(f"{lang} {metric.upper()} {100 * rate:.1f}% (constant output: {100 * floor:.1f}%)")
        if failed:
            out.append(Finding("downstream", f"{variant} is no better than one constant output for every utterance: "
                                             f"{', '.join(failed)}: it has not learned to transcribe", True,
                               "no_better_than_constant"))
    return out
