"""Speaker-disjoint splits, the labelled fine-tuning subset and the
language-balanced pretraining list (temperature sampling), written as fairseq
manifests."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubert.corpus import Utterance

SPLITS = ("train", "valid", "test", "finetune")


@dataclass(frozen=True)
class BalanceConfig:
    seed: int = 0
    valid_speakers: int = 2
    test_speakers: int = 2
    finetune_fraction: float = 0.25
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"balance.alpha={self.alpha} must be in [0, 1] (1 natural, 0 uniform)")
        if not 0.0 < self.finetune_fraction <= 1.0:
            raise ValueError(f"balance.finetune_fraction={self.finetune_fraction} must be in (0, 1]")


def _lang_seed(seed: int, lang: str, salt: int) -> int:
    return seed * 1_000_003 + salt * 7919 + sum(ord(ch) * 31**i for i, ch in enumerate(lang))


def split_by_speaker(utts: list[Utterance], cfg: BalanceConfig) -> dict[str, list[Utterance]]:
    """train / valid / test with no speaker in two splits, per language, plus finetune ⊂ train."""
    by_lang: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_lang[u.lang].append(u)
    splits: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    for lang in sorted(by_lang):
        speakers = sorted({u.speaker for u in by_lang[lang]})
        need = cfg.valid_speakers + cfg.test_speakers + 1
        if len(speakers) < need:
            raise ValueError(f"{lang} has {len(speakers)} speakers but balance.valid_speakers + test_speakers + 1 "
                             f"= {need} are needed; add speakers or lower balance.valid_speakers/test_speakers")
        random.Random(_lang_seed(cfg.seed, lang, 1)).shuffle(speakers)
        test = set(speakers[: cfg.test_speakers])
        valid = set(speakers[cfg.test_speakers: cfg.test_speakers + cfg.valid_speakers])
        train = [u for u in by_lang[lang] if u.speaker not in test | valid]
        splits["test"] += [u for u in by_lang[lang] if u.speaker in test]
        splits["valid"] += [u for u in by_lang[lang] if u.speaker in valid]
        splits["train"] += train
        k = max(1, round(cfg.finetune_fraction * len(train)))
        chosen = set(random.Random(_lang_seed(cfg.seed, lang, 2)).sample(range(len(train)), k))
        splits["finetune"] += [u for i, u in enumerate(train) if i in chosen]
    return splits


def hours_by_lang(utts: list[Utterance], sample_rate: int) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for u in utts:
        out[u.lang] += u.num_samples / sample_rate / 3600
    return dict(sorted(out.items()))


def temperature_probs(amounts: dict[str, float], alpha: float) -> dict[str, float]:
    """p_l proportional to (n_l / N)^alpha (XLS-R). alpha=1 natural, 0 uniform."""
    total = sum(amounts.values())
    if total <= 0:
        raise ValueError(f"no audio to balance: {amounts}")
    weights = {lang: (n / total) ** alpha for lang, n in amounts.items() if n > 0}
    z = sum(weights.values())
    return {lang: w / z for lang, w in weights.items()}


def balanced_list(train: list[Utterance], alpha: float, seed: int, sample_rate: int) -> list[Utterance]:
    """Re-sample train so each language's share of hours follows temperature sampling.

    The total stays at the natural number of hours; a language whose target
    exceeds what it has is repeated whole (k copies) plus a seeded subset for the
    remainder; one below it is a seeded subset. alpha=1 returns train unchanged.
    """
    if alpha == 1.0:
        return list(train)
    hours = hours_by_lang(train, sample_rate)
    probs = temperature_probs(hours, alpha)
    total = sum(hours.values())
    out: list[Utterance] = []
    for lang in sorted(probs):
        utts = [u for u in train if u.lang == lang]
        factor = probs[lang] * total / hours[lang]
        m = max(1, round(factor * len(utts)))
        copies, rest = divmod(m, len(utts))
        picked = sorted(random.Random(_lang_seed(seed, lang, 3)).sample(range(len(utts)), rest))
        out += utts * copies + [utts[i] for i in picked]
    return out


def write_fairseq_manifest(out_dir: str | Path, split: str, root: str, utts: list[Utterance]) -> None:
    """{split}.tsv (root line, then path<TAB>num_samples), {split}.lang and {split}.wrd, line-aligned."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{split}.tsv").write_text(root + "\n" + "".join(f"{u.path}\t{u.num_samples}\n" for u in utts), encoding="utf-8")
    (out_dir / f"{split}.lang").write_text("".join(f"{u.lang}\n" for u in utts), encoding="utf-8")
    (out_dir / f"{split}.wrd").write_text("".join(f"{u.text}\n" for u in utts), encoding="utf-8")


def tokens(lang: str, text: str) -> list[str]:
    """Scoring units: words for English, characters for Mandarin."""
    return text.split() if lang == "en" else list(text.replace(" ", ""))


def oov_rate(test: list[Utterance], reference: list[Utterance]) -> dict[str, float]:
    """Per language, the fraction of test tokens never seen in the reference transcripts."""
    out = {}
    for lang in sorted({u.lang for u in test}):
        vocab = {t for u in reference if u.lang == lang for t in tokens(lang, u.text)}
        toks = [t for u in test if u.lang == lang for t in tokens(lang, u.text)]
        out[lang] = round(sum(t not in vocab for t in toks) / len(toks), 4) if toks else 0.0
    return out


def balance_metrics(splits: dict[str, list[Utterance]], pretrain: list[Utterance], alpha: float,
                    sample_rate: int) -> dict[str, Any]:
    natural = hours_by_lang(splits["train"], sample_rate)
    after = hours_by_lang(pretrain, sample_rate)
    langs = sorted(natural)

    def share(h: dict[str, float]) -> dict[str, float]:
        total = sum(h.values())
        return {lang: round(h.get(lang, 0.0) / total, 4) for lang in langs}

    return {
        "hours": {s: {lang: round(h, 4) for lang, h in hours_by_lang(u, sample_rate).items()} for s, u in splits.items()},
        "utterances": {s: {lang: sum(x.lang == lang for x in u) for lang in langs} for s, u in splits.items()},
        "speakers": {s: {lang: len({x.speaker for x in u if x.lang == lang}) for lang in langs} for s, u in splits.items()},
        "pretrain": {
            "hours_before": {lang: round(natural[lang], 4) for lang in langs},
            "hours_after": {lang: round(after.get(lang, 0.0), 4) for lang in langs},
            "proportion_natural": share(natural),
            "proportion_target": {lang: round(p, 4) for lang, p in temperature_probs(natural, alpha).items()},
            "proportion_effective": share(after),
            "utterances": len(pretrain),
        },
        "oov_rate_test_vs_finetune": oov_rate(splits["test"], splits["finetune"]),
    }
