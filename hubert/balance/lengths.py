"""Utterance lengths against what each training stage admits, decided in the balance
stage, before any training starts.

fairseq handles lengths differently in each stage, and the worst of it shows an hour in:

- fine-tuning pads whole utterances and never crops (a crop would cut audio its
  transcript still names): a training utterance longer than finetune.batch.max_tokens
  stops fairseq ("Sentences lengths should not exceed max_tokens"), after both
  pretraining iterations; a valid one is dropped without a word
  (skip_invalid_size_inputs_valid_test);
- fine-tuning's time masking needs frames to draw its spans in: the finetune stage
  refuses a training set whose shortest utterance is below mask_length / mask_prob
  frames, and fairseq fails ("the entire sequence is masked") on one of about
  mask_length + 2 frames;
- pretraining crops long clips (max_sample_size) but leaves out every clip shorter
  than pretrain.batch.min_sample_size, saying so only in its log.

The test split has no limit: the evaluate stage decodes one utterance at a time,
whatever its length.

``balance.length_policy`` decides, for every utterance outside a limit: ``skip``
(the default) leaves it out of that stage only and counts it (metrics/balance.json;
the letters stage leaves it out of fine-tuning and counts it in metrics/letters.json;
the report names the counts); ``refuse`` stops the balance stage at once, naming the
longest (or shortest) utterances, their files and the param that admits them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hubert.pretrain.params import CONV_HOP, CONV_KERNELS_STRIDES

POLICIES = ("skip", "refuse")
# samples the CNN needs for its first frame (kernel 10 x 5 x 2^6 minus the overlaps): 400 at 16 kHz
RECEPTIVE_FIELD = 1 + sum((k - 1) * math.prod(s for _, s in CONV_KERNELS_STRIDES[:i])
                          for i, (k, _) in enumerate(CONV_KERNELS_STRIDES))
SHOWN = 5  # utterances named in a refusal


class LengthError(ValueError):
    """Utterances outside a training stage's limits, with balance.length_policy refuse."""


@dataclass(frozen=True)
class Limits:
    """In samples: the longest utterance fine-tuning admits (finetune.batch.max_tokens), the
    shortest it can mask, and the shortest pretraining keeps (pretrain.batch.min_sample_size,
    the larger of the two iterations')."""

    finetune_max: int
    finetune_min: int
    pretrain_min: int


def limits_of(finetune_batch_max_tokens: int, apply_mask: bool, mask_prob: float, mask_length: int,
              pretrain_min_sample_sizes: Sequence[int]) -> Limits:
    """The limits of the params (the stage scripts read them)."""
    return Limits(finetune_max=finetune_batch_max_tokens,
                  finetune_min=finetune_min_samples(apply_mask, mask_prob, mask_length),
                  pretrain_min=max(pretrain_min_sample_sizes))


def limits_of_sections(finetune: dict, pretrain: dict) -> Limits:
    """The limits of params.yaml's finetune and pretrain sections (both iterations' batches)."""
    from hubert.finetune.params import finetune_params
    from hubert.pretrain.params import ITERATIONS, iteration_params

    ft = finetune_params(finetune)
    return limits_of(ft.batch.max_tokens, ft.model.apply_mask, ft.model.mask_prob, ft.model.mask_length,
                     [iteration_params(pretrain, it).batch.min_sample_size for it in ITERATIONS])


def finetune_min_samples(apply_mask: bool, mask_prob: float, mask_length: int) -> int:
    """The shortest utterance fine-tuning's time masking can draw its spans in.

    The finetune stage refuses mask_prob x frames / mask_length below 1 (frames counted
    as samples // CONV_HOP), and fairseq, which draws at least two spans, fails when they
    may cover every frame (up to mask_length + 2 frames). The samples returned give that
    many frames both ways: CONV_HOP per frame, plus what the CNN's receptive field needs
    beyond one hop.
    """
    frames = 1
    if apply_mask and mask_prob > 0:
        frames = max(math.ceil(mask_length / mask_prob - 1e-9), mask_length + 3)
    return frames * CONV_HOP + RECEPTIVE_FIELD - CONV_HOP


@dataclass(frozen=True)
class Item:
    """One utterance as the checks see it: where it is, its length and language."""

    path: str
    num_samples: int
    lang: str


@dataclass
class Screened:
    """One split against one stage's limits: the indices it keeps, and per language how
    many it leaves out as too long or too short."""

    keep: list[int]
    too_long: Counter
    too_short: Counter

    def as_metrics(self, langs: Sequence[str]) -> dict[str, dict[str, int]]:
        return {"too_long": {lang: self.too_long.get(lang, 0) for lang in langs},
                "too_short": {lang: self.too_short.get(lang, 0) for lang in langs}}


def screen(items: Sequence[Item], *, longest: int | None, shortest: int) -> Screened:
    """Which of ``items`` lie within [shortest, longest] samples (longest None: no upper limit)."""
    out = Screened([], Counter(), Counter())
    for i, it in enumerate(items):
        if longest is not None and it.num_samples > longest:
            out.too_long[it.lang] += 1
        elif it.num_samples < shortest:
            out.too_short[it.lang] += 1
        else:
            out.keep.append(i)
    return out


def refusal(items: Sequence[Item], where: str, *, longest: int | None, shortest: int, sample_rate: int,
            admit_long: str, admit_short: str) -> str | None:
    """The message of ``refuse`` for the items of ``where`` outside the limits, or None."""
    long = sorted((it for it in items if longest is not None and it.num_samples > longest),
                  key=lambda it: -it.num_samples)
    short = sorted((it for it in items if it.num_samples < shortest), key=lambda it: it.num_samples)
    parts = []

    def named(found: list[Item]) -> str:
        more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        return ", ".join(f"{it.path} ({it.num_samples / sample_rate:.2f} s)" for it in found[:SHOWN]) + more

    if long:
        parts.append(f"{len(long)} {where} utterance(s) longer than {longest} samples "
                     f"({longest / sample_rate:.2f} s): {named(long)}; {admit_long}")
    if short:
        parts.append(f"{len(short)} {where} utterance(s) shorter than {shortest} samples "
                     f"({shortest / sample_rate:.2f} s): {named(short)}; {admit_short}")
    return "; ".join(parts) or None


ADMIT_FINETUNE_LONG = ("raise finetune.batch.max_tokens to the longest (fine-tuning pads whole utterances, never "
                       "crops), or set balance.length_policy=skip to leave them out of fine-tuning")
ADMIT_FINETUNE_SHORT = ("lower finetune.model.mask_length or raise mask_prob, or set balance.length_policy=skip to "
                        "leave them out of fine-tuning")
ADMIT_PRETRAIN_SHORT = ("lower pretrain.batch.min_sample_size (and the iterations' own), or set "
                        "balance.length_policy=skip (fairseq leaves them out of pretraining); corpus.min_seconds "
                        "drops them from the corpus instead")


def check_splits(splits: dict[str, Sequence[Item]], limits: Limits, policy: str, sample_rate: int) -> dict:
    """The balance stage's decision: raises LengthError under ``refuse``; under ``skip``
    returns the counts (metrics): fine-tuning's finetune and valid utterances against
    its limits, pretraining's train and valid against its minimum, and the test
    utterances longer than fine-tuning's limit that evaluate decodes all the same."""
    if policy not in POLICIES:
        raise ValueError(f"balance.length_policy={policy!r}: one of {', '.join(POLICIES)}")
    langs = sorted({it.lang for items in splits.values() for it in items})
    if policy == "refuse":
        problems = [refusal(splits[s], f"fine-tuning {s}", longest=limits.finetune_max,
                            shortest=limits.finetune_min, sample_rate=sample_rate,
                            admit_long=ADMIT_FINETUNE_LONG, admit_short=ADMIT_FINETUNE_SHORT)
                    for s in ("finetune", "valid")]
        problems += [refusal(splits[s], f"pretraining {s}", longest=None, shortest=limits.pretrain_min,
                             sample_rate=sample_rate, admit_long="", admit_short=ADMIT_PRETRAIN_SHORT)
                     for s in ("train", "valid")]
        problems = [p for p in problems if p]
        if problems:
            raise LengthError("balance.length_policy=refuse: " + "; ".join(problems))
    out: dict = {}
    for split in ("finetune", "valid"):
        done = screen(splits[split], longest=limits.finetune_max, shortest=limits.finetune_min)
        out["finetune" if split == "finetune" else "finetune_valid"] = done.as_metrics(langs)
    for split in ("train", "valid"):
        done = screen(splits[split], longest=None, shortest=limits.pretrain_min)
        out[f"pretrain_{split}"] = {"too_short": done.as_metrics(langs)["too_short"]}
    long_tests = Counter(it.lang for it in splits["test"] if it.num_samples > limits.finetune_max)
    out["test_decoded_longer_than_max_tokens"] = {lang: long_tests.get(lang, 0) for lang in langs}
    out["limits_s"] = {"finetune_max": round(limits.finetune_max / sample_rate, 3),
                       "finetune_min": round(limits.finetune_min / sample_rate, 3),
                       "pretrain_min": round(limits.pretrain_min / sample_rate, 3)}
    every = [it.num_samples for items in splits.values() for it in items]
    out["shortest_s"] = round(min(every) / sample_rate, 3) if every else 0.0
    out["longest_s"] = round(max(every) / sample_rate, 3) if every else 0.0
    return out


def skipped_total(counts: dict) -> dict[str, int]:
    """{"finetune too_long": n, ...} of the non-zero skip counts of :func:`check_splits`."""
    return {f"{group} {kind}": sum(per.values()) for group, kinds in counts.items()
            if isinstance(kinds, dict) and group != "limits_s"
            for kind, per in kinds.items() if isinstance(per, dict) and sum(per.values())}
