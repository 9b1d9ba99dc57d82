"""Speaker-disjoint splits, the labelled fine-tuning subset and the
language-balanced pretraining list (temperature sampling), written as fairseq
manifests (stage balance)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hubert.corpus.records import Utterance
from hubert.fairseq.formats import write_lines, write_tsv

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
    remainder; one below it is a seeded subset. Utterances are drawn by count
    (target hours / mean duration), so the shares are met in expectation: with
    unequal durations one draw can miss by more than an utterance. alpha=1
    returns train unchanged.
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
    write_tsv(out_dir / f"{split}.tsv", root, ((u.path, u.num_samples) for u in utts))
    write_lines(out_dir / f"{split}.lang", (u.lang for u in utts))
    write_lines(out_dir / f"{split}.wrd", (u.text for u in utts))


def balance_corpus(utts: list[Utterance], cfg: BalanceConfig,
                   sample_rate: int) -> tuple[dict[str, list[Utterance]], list[Utterance]]:
    """The balance stage: (speaker-disjoint train / valid / test with finetune within
    train, the language-balanced pretraining list drawn from train)."""
    splits = split_by_speaker(utts, cfg)
    return splits, balanced_list(splits["train"], cfg.alpha, cfg.seed, sample_rate)


def write_manifests(out_dir: str | Path, root: str, splits: dict[str, list[Utterance]],
                    pretrain: list[Utterance]) -> None:
    """Every split's manifest; ``train`` is the pretraining list (with its repeats)."""
    for split, utts in {**splits, "train": pretrain}.items():
        write_fairseq_manifest(out_dir, split, root, utts)
