"""Label quality against phone alignments (HuBERT paper; fairseq's
examples/hubert/measure_teacher_quality.py gives the definitions).

From the frame-level joint distribution p(y, z) of phone y and unit z:

- phone purity   = sum_z max_y p(y, z)   (accuracy of mapping each unit to its majority phone)
- cluster purity = sum_y max_z p(y, z)   (accuracy of mapping each phone to its majority unit)
- PNMI           = I(y; z) / H(y)        (fraction of phone uncertainty the unit removes)

Each label frame is paired with the phone at its centre, evaluated at the
label rate (50 Hz units are compared with alignments sampled at 50 Hz, not
upsampled). Phones carry their language (``en:s``, ``zh:i``), so a unit shared
by an English and a Mandarin phone counts as impure in the purities. For
mixed-language labels PNMI is split in two: I(phone; unit) = I(language; unit)
+ I(phone; unit | language). Only the second part is phone knowledge, so the
headline is the language-conditional PNMI (:func:`conditional_pnmi`) beside
the per-language PNMIs; the language-prefixed PNMI is reported as what it is.
The same quantities for the labels shuffled across frames (seeded
permutation, same marginals) are the floor that finite samples give by chance.

How language-specific the units are: I(z; lang) / H(lang) (normalised mutual
information, 0 = units say nothing about the language, 1 = every unit belongs
to one language), language purity sum_z max_l p(l, z) against the
majority-language baseline max_l p(l), and per language the entropy (bits) of
its unit usage and how many units it uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hubert.corpus.alignments import is_tonal, toneless

WINDOW_S = 0.025  # both MFCC frames and HuBERT CNN frames see 400 samples (25 ms) at 16 kHz


@dataclass(frozen=True)
class UttLabels:
    """One distinct utterance: its language, alignment ([[phone, start_s, end_s], ...] or None)
    and units (frames,) at the label rate."""

    lang: str
    alignment: list | None
    units: np.ndarray


def frame_centres(n_frames: int, rate: float, window_s: float = WINDOW_S) -> np.ndarray:
    """(n_frames,) seconds: frame i spans [i / rate, i / rate + window_s]."""
    return np.arange(n_frames) / rate + window_s / 2


def segment_at(alignment: list, times: np.ndarray) -> np.ndarray:
    """Index of the alignment segment whose [start, end) holds each time (the last one past the end)."""
    if not alignment:
        raise ValueError("empty alignment")
    starts = np.asarray([float(a[1]) for a in alignment])
    return np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(alignment) - 1)


def phones_at(alignment: list, times: np.ndarray) -> list[str]:
    """The phone whose [start, end) interval holds each time (the last phone past the end)."""
    return [alignment[i][0] for i in segment_at(alignment, times)]


def _entropy(p: np.ndarray) -> float:
    """Entropy in bits of a probability vector (zeros ignored)."""
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def chance_bits(units: int) -> float:
    """log2(K + 4): the masked loss of uniform guessing over fairseq's K units plus its 4 special symbols."""
    return math.log2(units + 4)


def entropy_bits(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    return _entropy(counts / counts.sum()) if counts.sum() > 0 else 0.0


def unit_and_pair_counts(sequences: Iterable[np.ndarray], n_units: int,
                         chunk_frames: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """(units,) counts and (units, units) counts of consecutive pairs within each sequence,
    streamed: sequences are counted in chunks of about chunk_frames frames, so a label
    file of any size needs no more memory than one chunk."""
    counts = np.zeros(n_units, dtype=np.int64)
    pairs = np.zeros(n_units * n_units, dtype=np.int64)
    units: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    held = 0

    def flush() -> None:
        nonlocal held
        if units:
            counts[:] += np.bincount(np.concatenate(units), minlength=n_units)
            pairs[:] += np.bincount(np.concatenate(codes), minlength=n_units * n_units)
        units.clear()
        codes.clear()
        held = 0

    for x in sequences:
        x = np.asarray(x, dtype=np.int64)
        units.append(x)
        codes.append(x[:-1] * n_units + x[1:])
        held += len(x)
        if held >= chunk_frames:
            flush()
    flush()
    return counts, pairs.reshape(n_units, n_units)


def conditional_entropy_bits(joint: np.ndarray) -> float:
    """H(b | a) in bits from a joint count table (a along rows, b along columns)."""
    joint = np.asarray(joint)
    return entropy_bits(joint.ravel()) - entropy_bits(joint.sum(1)) if joint.sum() > 0 else 0.0


def bigram_entropy_bits(sequences: Iterable[np.ndarray], n_units: int) -> float:
    """H(z_t | z_(t-1)) in bits over the unit pairs within each sequence: the masked loss of a
    model that knew the previous unit and the pair statistics (a second reference beside the
    prior H(z), which knows neither)."""
    return conditional_entropy_bits(unit_and_pair_counts(sequences, n_units)[1])


def mutual_information_bits(joint: np.ndarray) -> float:
    """I(a; b) in bits from a joint count table (a along rows, b along columns)."""
    p = np.asarray(joint, dtype=np.float64)
    p = p / p.sum()
    return _entropy(p.sum(1)) + _entropy(p.sum(0)) - _entropy(p.ravel())


def purity_scores(joint: np.ndarray) -> dict[str, float]:
    """PNMI, phone purity and cluster purity from a (phones, units) count table."""
    p = np.asarray(joint, dtype=np.float64)
    if p.sum() <= 0:
        raise ValueError("empty joint table: no aligned frames to score")
    p = p / p.sum()
    h_y = _entropy(p.sum(1))
    return {
        "pnmi": mutual_information_bits(p) / h_y if h_y > 0 else 0.0,
        "phone_purity": float(p.max(0).sum()),
        "cluster_purity": float(p.max(1).sum()),
    }


def joint_counts(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """(n_rows, n_cols) int64 co-occurrence counts of paired integer arrays."""
    return np.bincount(rows * n_cols + cols, minlength=n_rows * n_cols).reshape(n_rows, n_cols)


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in d.items()}


def conditional_pnmi(joints: list[np.ndarray]) -> dict[str, float]:
    """From one (phones, units) count table per language: the language-conditional PNMI
    I(phone; unit | language) / H(phone | language), and the frame-weighted mean of the
    per-language PNMIs. Neither credits a unit for telling the languages apart."""
    weights = np.asarray([j.sum() for j in joints], dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError("empty joint tables: no aligned frames to score")
    weights /= weights.sum()
    mi = np.asarray([mutual_information_bits(j) if j.sum() else 0.0 for j in joints])
    h = np.asarray([entropy_bits(j.sum(1)) for j in joints])
    per_lang = np.divide(mi, h, out=np.zeros_like(mi), where=h > 0)
    h_cond = float((weights * h).sum())
    return {"pnmi_conditional": float((weights * mi).sum()) / h_cond if h_cond > 0 else 0.0,
            "pnmi_per_language_mean": float((weights * per_lang).sum())}


# the phone scores that are also given for the toneless inventory
TONELESS_SCORES = ("pnmi_conditional", "pnmi_per_language_mean", "pnmi_conditional_shuffled", "pnmi_prefixed",
                   "phone_purity", "cluster_purity", "phones")


def has_tones(utts: list[UttLabels]) -> bool:
    return any(is_tonal(seg[0]) for u in utts if u.alignment for seg in u.alignment)


def without_tones(utts: list[UttLabels]) -> list[UttLabels]:
    """The same utterances with toneless phones (``A/3`` -> ``A``)."""
    return [UttLabels(u.lang, [[toneless(seg[0]), *seg[1:]] for seg in u.alignment] if u.alignment else u.alignment,
                      u.units) for u in utts]


def label_quality(utts: list[UttLabels], label_rate: float, n_clusters: int, seed: int) -> dict:
    """Quality metrics over distinct utterances (numbers only, for metrics/*.json).

    The headline is ``pnmi_conditional``, I(phone; unit | language) / H(phone |
    language), with the per-language PNMIs and their frame-weighted mean: phones
    carry their language, so the language-prefixed PNMI (``pnmi_prefixed``, the
    classic figure) also credits units for telling the languages apart, which
    ``language.information_bits`` = I(language; unit) measures on its own.
    Shuffled labels (same marginals, within each language for the conditional
    scores) give the floors that finite samples reach by chance.

    Utterances without an alignment are counted and left out of the phone
    metrics (never given made-up phones); they still count for the language
    metrics, which need only the language.

    When phones carry tones (the built-in corpus's Mandarin vowels, ``A/3``), the
    scores are of the tonal inventory, and ``toneless`` holds the phone scores
    with the tones removed (and each language's PNMI), for comparison with
    toneless references.
    """
    out = _label_quality(utts, label_rate, n_clusters, seed)
    if has_tones(utts):
        plain = _label_quality(without_tones(utts), label_rate, n_clusters, seed, phones_only=True)
        out["toneless"] = {**{k: plain[k] for k in TONELESS_SCORES if k in plain},
                           "per_language": {lang: {k: block[k] for k in ("pnmi", "phone_purity", "cluster_purity")
                                                   if k in block}
                                            for lang, block in plain["per_language"].items()}}
    return out


def _label_quality(utts: list[UttLabels], label_rate: float, n_clusters: int, seed: int,
                   phones_only: bool = False) -> dict:
    """``phones_only``: the phone scores alone (the language and usage metrics do not
    depend on the phones, so the toneless pass does not repeat them)."""
    langs = sorted({u.lang for u in utts})
    rng = np.random.default_rng(seed)
    phone_ids: dict[str, int] = {}
    y_parts, z_parts, l_parts, lz_parts, lz_lang = [], [], [], [], []
    for u in utts:
        units = np.asarray(u.units, dtype=np.int64)
        lz_parts.append(units)
        lz_lang.append(np.full(len(units), langs.index(u.lang)))
        if u.alignment is None or len(units) == 0:
            continue
        # phone ids per alignment segment, then per frame by index (no per-frame Python)
        segment_ids = np.asarray([phone_ids.setdefault(f"{u.lang}:{seg[0]}", len(phone_ids)) for seg in u.alignment])
        y_parts.append(segment_ids[segment_at(u.alignment, frame_centres(len(units), label_rate))])
        z_parts.append(units)
        l_parts.append(np.full(len(units), langs.index(u.lang)))
    aligned = sum(u.alignment is not None for u in utts)
    out: dict = {
        "utterances": {"total": len(utts), "aligned": aligned, "without_alignment": len(utts) - aligned},
        "frames": {"total": int(sum(len(u.units) for u in utts)),
                   "aligned": int(sum(len(z) for z in z_parts))},
    }
    per_lang: dict[str, dict] = {}
    if z_parts:
        y, z, lang = np.concatenate(y_parts), np.concatenate(z_parts), np.concatenate(l_parts)
        n_y = len(phone_ids)
        joints, shuffled_joints = [], []
        for li, name in enumerate(langs):
            sel = lang == li
            if not sel.any():
                continue
            joint = joint_counts(y[sel], z[sel], n_y, n_clusters)
            shuffled = joint_counts(y[sel], z[sel][rng.permutation(int(sel.sum()))], n_y, n_clusters)
            joints.append(joint)
            shuffled_joints.append(shuffled)
            per_lang[name] = {**_round(purity_scores(joint)),
                              "pnmi_shuffled": round(purity_scores(shuffled)["pnmi"], 4), "frames": int(sel.sum())}
        out.update(_round(conditional_pnmi(joints)))
        out["pnmi_conditional_shuffled"] = round(conditional_pnmi(shuffled_joints)["pnmi_conditional"], 4)
        prefixed = purity_scores(joint_counts(y, z, n_y, n_clusters))
        out["pnmi_prefixed"] = round(prefixed["pnmi"], 4)
        out["pnmi_prefixed_shuffled"] = round(
            purity_scores(joint_counts(y, z[rng.permutation(len(z))], n_y, n_clusters))["pnmi"], 4)
        out["phone_purity"] = round(prefixed["phone_purity"], 4)
        out["cluster_purity"] = round(prefixed["cluster_purity"], 4)
        out["phones"] = n_y
    if phones_only:
        out["per_language"] = per_lang
        return out
    all_z, all_l = np.concatenate(lz_parts), np.concatenate(lz_lang)
    lang_joint = joint_counts(all_l, all_z, len(langs), n_clusters)  # (langs, units)
    h_lang = entropy_bits(lang_joint.sum(1))
    p = lang_joint / lang_joint.sum()
    out["language"] = {
        "information_bits": round(mutual_information_bits(lang_joint), 4),
        "nmi": round(mutual_information_bits(lang_joint) / h_lang, 4) if h_lang > 0 else 0.0,
        "purity": round(float(p.max(0).sum()), 4),
        "majority_baseline": round(float(p.sum(1).max()), 4),
    }
    for li, name in enumerate(langs):
        per_lang.setdefault(name, {}).update({
            "utterances": sum(u.lang == name for u in utts),
            "usage_entropy_bits": round(entropy_bits(lang_joint[li]), 4),
            "units_used": int((lang_joint[li] > 0).sum())})
    out["per_language"] = per_lang
    return out
