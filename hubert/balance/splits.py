"""Speaker-disjoint splits, the labelled fine-tuning subset and the
language-balanced pretraining list (temperature sampling), written as fairseq
manifests (stage balance)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hubert.corpus.records import SPLIT_NAMES, Utterance
from hubert.fairseq.formats import write_lines, write_tsv

SPLITS = ("train", "valid", "test", "finetune")


@dataclass(frozen=True)
class BalanceConfig:
    """The ``balance`` section: voices held out per language for valid and test (where a
    corpus brings no split of its own), the fraction of utterances held out instead
    when a corpus names no speakers, the fine-tuning fraction of train, and the
    temperature of language balancing."""

    seed: int = 0
    valid_speakers: int = 2
    test_speakers: int = 2
    valid_fraction_without_speakers: float = 0.05
    test_fraction_without_speakers: float = 0.05
    finetune_fraction: float = 0.25
    alpha: float = 0.5
    # utterances outside a training stage's length limits: skip (and count) or refuse (hubert/balance/lengths.py)
    length_policy: str = "skip"

    def __post_init__(self) -> None:
        if self.length_policy not in ("skip", "refuse"):
            raise ValueError(f"balance.length_policy={self.length_policy!r}: skip (leave such utterances out of the "
                             "stage they do not fit, and count them) or refuse (stop at once, naming them)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"balance.alpha={self.alpha} must be in [0, 1] (1 natural, 0 uniform)")
        if not 0.0 < self.finetune_fraction <= 1.0:
            raise ValueError(f"balance.finetune_fraction={self.finetune_fraction} must be in (0, 1]")
        held_out = self.valid_fraction_without_speakers + self.test_fraction_without_speakers
        if min(self.valid_fraction_without_speakers, self.test_fraction_without_speakers) < 0 or held_out >= 1:
            raise ValueError("balance.valid_fraction_without_speakers and test_fraction_without_speakers must be "
                             f">= 0 and leave utterances for train (they sum to {held_out})")


def _lang_seed(seed: int, lang: str, salt: int) -> int:
    return seed * 1_000_003 + salt * 7919 + sum(ord(ch) * 31**i for i, ch in enumerate(lang))


def split_by_speaker(utts: list[Utterance], cfg: BalanceConfig) -> dict[str, list[Utterance]]:
    """train / valid / test per language, plus finetune within train.

    An utterance whose corpus names its split (``Utterance.split``: LibriSpeech's
    dev-clean imported as valid, ...) stays there. The rest are held out by voice:
    ``valid_speakers`` and ``test_speakers`` speakers per language, for each of
    valid and test that the language's corpora do not bring themselves, so that no
    speaker is in two splits; utterances without a speaker ("") are held out by
    ``*_fraction_without_speakers`` of them instead. Each split keeps the corpus's
    order.
    """
    by_lang: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_lang[u.lang].append(u)
    splits: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    for lang in sorted(by_lang):
        group = by_lang[lang]
        where = [u.split for u in group]  # None: not decided yet
        n_valid = 0 if "valid" in where else cfg.valid_speakers
        n_test = 0 if "test" in where else cfg.test_speakers
        speakers = sorted({u.speaker for u, w in zip(group, where) if w is None and u.speaker})
        if speakers and n_valid + n_test:
            need = n_valid + n_test + 1
            if len(speakers) < need:
                raise ValueError(f"{lang} has {len(speakers)} speakers but balance.valid_speakers + test_speakers "
                                 f"+ 1 = {need} are needed; add speakers, lower balance.valid_speakers/test_speakers"
                                 ", or import the corpus's own valid and test splits (corpus.imports[].split)")
            random.Random(_lang_seed(cfg.seed, lang, 1)).shuffle(speakers)
            held = {spk: "test" for spk in speakers[:n_test]} | {
                spk: "valid" for spk in speakers[n_test: n_test + n_valid]}
            where = [held.get(u.speaker, "train") if w is None and u.speaker else w for u, w in zip(group, where)]
        anonymous = [i for i, (u, w) in enumerate(zip(group, where)) if w is None]
        random.Random(_lang_seed(cfg.seed, lang, 4)).shuffle(anonymous)
        # at least one utterance each when asked for and there are enough to leave train some
        floor = 1 if len(anonymous) >= 3 else 0
        n_test_anon = max(floor, round(cfg.test_fraction_without_speakers * len(anonymous))) if n_test else 0
        n_valid_anon = max(floor, round(cfg.valid_fraction_without_speakers * len(anonymous))) if n_valid else 0
        for rank, i in enumerate(anonymous):
            where[i] = "test" if rank < n_test_anon else "valid" if rank < n_test_anon + n_valid_anon else "train"
        for name in SPLIT_NAMES:
            splits[name] += [u for u, w in zip(group, where) if w == name]
        # the labelled subset: transcribed speech only (corpus.imports[].transcripts optional keeps the rest)
        train = [u for u, w in zip(group, where) if w == "train" and u.text]
        if train:
            k = max(1, round(cfg.finetune_fraction * len(train)))
            chosen = set(random.Random(_lang_seed(cfg.seed, lang, 2)).sample(range(len(train)), k))
            splits["finetune"] += [u for i, u in enumerate(train) if i in chosen]
    return splits


def speaker_warning(utts: list[Utterance], cfg: BalanceConfig) -> str | None:
    """A warning when some utterances name no speaker (a manifest without a speaker column):
    their valid and test sets are drawn by utterance, so a voice can be in train and test."""
    anonymous: dict[str, int] = defaultdict(int)
    for u in utts:
        if not u.speaker and u.split is None:
            anonymous[u.lang] += 1
    if not anonymous:
        return None
    counts = ", ".join(f"{lang}: {n}" for lang, n in sorted(anonymous.items()))
    return (f"warning: utterances without a speaker ({counts}) are held out by utterance: "
            f"{cfg.valid_fraction_without_speakers:g} to valid and {cfg.test_fraction_without_speakers:g} to test "
            "(balance.valid_fraction_without_speakers, test_fraction_without_speakers), so the same voice can be in "
            "train and test and the error rates flatter the model. Add a speaker column to the manifest, or import "
            "the corpus's own splits (corpus.imports[].split).")


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
    """Up-sample train so each language's share of hours follows temperature sampling,
    without dropping anything: every utterance is in the list at least once.

    The language that temperature sampling favours least (relative to its hours)
    is kept once; each other language is repeated to its target hours, p_l / p_ref
    times the reference language's hours: whole copies, then a seeded subset drawn
    by hours for the rest (within half an utterance of the target). An epoch of the
    list is then one pass over every utterance plus the repeats. alpha=1 returns
    train unchanged.
    """
    if alpha == 1.0:
        return list(train)
    hours = hours_by_lang(train, sample_rate)
    probs = temperature_probs(hours, alpha)
    scale = max(hours[lang] / probs[lang] for lang in probs)  # total hours of the balanced list
    out: list[Utterance] = []
    for lang in sorted(probs):
        utts = [u for u in train if u.lang == lang]
        target = probs[lang] * scale
        copies = max(1, int(target // hours[lang] + 1e-9))
        rest = target - copies * hours[lang]
        order = list(range(len(utts)))
        random.Random(_lang_seed(seed, lang, 3)).shuffle(order)
        picked = []
        for i in order:
            duration = utts[i].num_samples / sample_rate / 3600
            if rest <= duration / 2:
                break
            picked.append(i)
            rest -= duration
        out += utts * copies + [utts[i] for i in sorted(picked)]
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
    """Every split's manifest; ``train`` is the pretraining list (with its repeats), and
    ``valid_<lang>`` the valid utterances of each language (pretraining validates on
    each, so a language that lags shows)."""
    for split, utts in {**splits, "train": pretrain}.items():
        write_fairseq_manifest(out_dir, split, root, utts)
    for lang in sorted({u.lang for u in splits["valid"]}):
        write_fairseq_manifest(out_dir, f"valid_{lang}", root, [u for u in splits["valid"] if u.lang == lang])
