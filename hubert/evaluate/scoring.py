"""Scoring for the evaluate stage: greedy CTC decoding, tokenisation of zh / en / code-switched
transcripts, edit-distance error counts, corpus error rates with (paired) bootstrap intervals, and
the "constant output" floor a model that ignores the audio would reach.

Transcripts are expected already normalised (lowercase, no punctuation). Pure Python + numpy + jiwer:
no torch here, so the stage can score decoded text without loading a model.

"mer" throughout is the code-switching *mixed error rate* (edit distance over Han characters plus
English words, divided by the number of such reference tokens), NOT jiwer.mer (the match error rate).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jiwer
import numpy as np

from hubert.finetune.letters import HAN_RANGES, is_han  # noqa: F401 (is_han: part of this module's API)

_HAN_CLASS = "".join(f"{chr(a)}-{chr(b)}" for a, b in HAN_RANGES)
# one Han character, or a maximal run of anything that is neither Han nor whitespace (an English word)
_MIXED = re.compile(f"[{_HAN_CLASS}]|[^\\s{_HAN_CLASS}]+")

# which tokeniser each metric uses, per language
METRICS: dict[str, tuple[str, ...]] = {"zh": ("cer", "mer"), "en": ("wer", "cer", "mer"), "mix": ("mer", "cer")}

# index-matrix elements drawn at once by the bootstraps (int64: 8 MiB), so 1000 x 10000 never sits in memory
_CHUNK_ELEMENTS = 1 << 20


# ---------------------------------------------------------------- decoding
def greedy_ctc(emissions: Any, blank: int = 0) -> list[int]:
    """Greedy CTC: argmax per frame, merge repeats, drop blanks (as fairseq's Viterbi decoder).

    A blank between two identical symbols separates them, so both are kept. ``emissions`` is a
    (T, V) array of logits or log-probs (a torch tensor must be on the CPU).
    """
    x = np.asarray(emissions)
    if x.ndim != 2:
        raise ValueError(f"emissions must be (T, V), got shape {x.shape}")
    if x.shape[0] == 0:
        return []
    best = x.argmax(axis=-1)
    # merge repeats first, then drop blanks: the order is what keeps "a _ a" as two symbols
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(t) for t in best[keep] if t != blank]


# ---------------------------------------------------------------- tokenisation
def mixed_tokens(text: str) -> list[str]:
    """Code-switching tokens: each Han character alone, each maximal non-Han non-space run as one word."""
    return _MIXED.findall(text)


def char_tokens(text: str, keep_spaces: bool) -> list[str]:
    """Characters. ``keep_spaces`` (en): whitespace collapsed to single spaces, which count as
    characters (like jiwer.cer); otherwise (zh) all whitespace is removed."""
    return list(" ".join(text.split()) if keep_spaces else "".join(text.split()))


def tokenise(text: str, lang: str, metric: str) -> list[str]:
    """The scoring units of ``metric`` ("wer", "cer" or "mer") for a transcript in ``lang``."""
    if metric not in METRICS.get(lang, ()):
        raise ValueError(f"metric {metric!r} is not defined for lang {lang!r}; expected one of {METRICS}")
    if metric == "wer":
        return text.split()
    if metric == "mer":
        return mixed_tokens(text)
    return char_tokens(text, keep_spaces=lang == "en")


# ---------------------------------------------------------------- error counts
@dataclass(frozen=True)
class Errors:
    """Edit operations against a reference of ``ref`` tokens; add them up to pool utterances."""

    sub: int = 0
    dele: int = 0
    ins: int = 0
    ref: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        """errors / ref; nan for an empty reference (the rate is undefined, not infinite)."""
        return self.errors / self.ref if self.ref else float("nan")

    def __add__(self, other: Errors) -> Errors:
        if not isinstance(other, Errors):
            return NotImplemented
        return Errors(self.sub + other.sub, self.dele + other.dele, self.ins + other.ins, self.ref + other.ref)


def edit_errors(ref_tokens: list[str], hyp_tokens: list[str]) -> Errors:
    """Minimum edit operations turning ``hyp_tokens`` into ``ref_tokens`` (jiwer's alignment)."""
    if not ref_tokens:
        # jiwer has raised on an empty reference in some versions; the answer is plain anyway
        return Errors(ins=len(hyp_tokens))
    if not hyp_tokens:
        return Errors(dele=len(ref_tokens), ref=len(ref_tokens))
    # jiwer only takes strings and splits them on whitespace; a token may itself be a space (en cer)
    # or contain characters its transforms touch, so each distinct token becomes an opaque word
    ids: dict[str, str] = {}
    ref = " ".join(ids.setdefault(t, f"t{len(ids)}") for t in ref_tokens)
    hyp = " ".join(ids.setdefault(t, f"t{len(ids)}") for t in hyp_tokens)
    out = jiwer.process_words(reference=[ref], hypothesis=[hyp])
    return Errors(out.substitutions, out.deletions, out.insertions, len(ref_tokens))


def metric_errors(ref: str, hyp: str, lang: str, metric: str) -> Errors:
    """Errors of one metric for one utterance."""
    return edit_errors(tokenise(ref, lang, metric), tokenise(hyp, lang, metric))


def utterance_errors(ref: str, hyp: str, lang: str) -> dict[str, Errors]:
    """Every metric defined for ``lang``: zh -> cer, mer; en -> wer, cer, mer; mix -> mer, cer.

    cer ignores whitespace for zh and mix and counts single spaces for en; "mer" is the mixed error
    rate over Han characters + English words (not jiwer.mer, the match error rate).
    """
    if lang not in METRICS:
        raise ValueError(f"unknown lang {lang!r}; expected one of {sorted(METRICS)}")
    return {m: metric_errors(ref, hyp, lang, m) for m in METRICS[lang]}


def corpus_rate(errors: list[Errors]) -> float:
    """Pooled rate: total errors / total reference tokens (not the mean of per-utterance rates,
    which would over-weight short utterances). nan when there are no reference tokens."""
    return sum(errors, Errors()).rate


# ---------------------------------------------------------------- bootstrap
def _arrays(errors: list[Errors]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([e.errors for e in errors], dtype=np.int64), np.array([e.ref for e in errors], dtype=np.int64))


def _index_chunks(n: int, replicates: int, seed: int, max_elements: int | None = None) -> Iterator[np.ndarray]:
    """(rows, n) matrices of utterance indices drawn with replacement, ``replicates`` rows in all."""
    rng = np.random.default_rng(seed)
    rows = max(1, (max_elements or _CHUNK_ELEMENTS) // max(n, 1))
    for start in range(0, replicates, rows):
        yield rng.integers(0, n, size=(min(rows, replicates - start), n))


def _rates(err: np.ndarray, ref: np.ndarray, idx: np.ndarray) -> np.ndarray:
    total = ref[idx].sum(axis=1)
    # a replicate that drew only empty references has no rate: nan, dropped by the callers
    return np.where(total > 0, err[idx].sum(axis=1) / np.maximum(total, 1), np.nan)


def _check(replicates: int, level: float) -> None:
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_interval(errors: list[Errors], *, replicates: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus rate, resampling utterances with replacement.

    Utterances (not tokens) are the resampling unit because errors within an utterance are correlated.
    (nan, nan) for an empty list.
    """
    _check(replicates, level)
    if not errors:
        return float("nan"), float("nan")
    err, ref = _arrays(errors)
    rates = np.concatenate([_rates(err, ref, idx) for idx in _index_chunks(len(errors), replicates, seed)])
    return _interval(rates, level)


def paired_bootstrap(a: list[Errors], b: list[Errors], *, replicates: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Paired bootstrap of rate(a) - rate(b) for two systems scored on the same utterances.

    Each replicate resamples utterance indices once and applies them to both systems, so the
    variation shared by the utterances cancels. Returns "difference" (on the full set), "low" and
    "high" (the percentile interval of the difference) and "p_a_not_better" (the fraction of
    replicates where rate(a) >= rate(b): small means a is reliably better).
    """
    _check(replicates, level)
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap needs aligned utterances, got {len(a)} and {len(b)}")
    if any(x.ref != y.ref for x, y in zip(a, b)):
        # same utterances scored with the same metric have the same reference lengths
        raise ValueError("paired_bootstrap: reference lengths differ, the two lists are not aligned per utterance")
    nan = float("nan")
    if not a:
        return {"difference": nan, "low": nan, "high": nan, "p_a_not_better": nan}
    err_a, ref = _arrays(a)
    err_b, _ = _arrays(b)
    ra, rb = [], []
    for idx in _index_chunks(len(a), replicates, seed):
        ra.append(_rates(err_a, ref, idx))
        rb.append(_rates(err_b, ref, idx))
    diff = np.concatenate(ra) - np.concatenate(rb)
    low, high = _interval(diff, level)
    valid = diff[~np.isnan(diff)]
    return {
        "difference": corpus_rate(a) - corpus_rate(b),
        "low": low,
        "high": high,
        "p_a_not_better": float(np.mean(valid >= 0)) if valid.size else nan,
    }


# ---------------------------------------------------------------- calibration floors
def most_frequent_tokens(texts: list[str], lang: str, n: int) -> str:
    """A constant output: the ``n`` most frequent tokens of ``texts`` (zh: characters concatenated;
    en: words joined by spaces; mix: mixed tokens joined by spaces). Ties go alphabetically."""
    if lang not in METRICS:
        raise ValueError(f"unknown lang {lang!r}; expected one of {sorted(METRICS)}")
    if lang == "zh":
        counts = Counter(t for text in texts for t in char_tokens(text, keep_spaces=False))
    elif lang == "en":
        counts = Counter(t for text in texts for t in text.split())
    else:
        counts = Counter(t for text in texts for t in mixed_tokens(text))
    top = sorted(counts, key=lambda t: (-counts[t], t))[:max(n, 0)]
    return ("" if lang == "zh" else " ").join(top)


def best_constant_output(train_texts: list[str], test_refs: list[str], lang: str, metric: str,
                         max_n: int = 10) -> tuple[str, float]:
    """The floor a model that ignores the audio must beat: the constant output (the n most frequent
    fine-tuning tokens, n = 0..max_n, n = 0 being the empty output) with the lowest corpus ``metric``
    on ``test_refs``, and that rate. Ties keep the smaller n.

    n is chosen on the test references themselves, so the floor is slightly optimistic: the
    conservative direction for a floor (a model that beats it beats any honestly tuned constant).
    """
    best: tuple[str, float] | None = None
    seen: set[str] = set()
    for n in range(max_n + 1):
        out = most_frequent_tokens(train_texts, lang, n)
        if out in seen:  # n beyond the vocabulary repeats the same output
            continue
        seen.add(out)
        rate = corpus_rate([metric_errors(ref, out, lang, metric) for ref in test_refs])
        if best is None or rate < best[1]:  # nan (no reference tokens) never wins: n = 0 stays
            best = (out, rate)
    assert best is not None  # n = 0 always runs
    return best
