"""Character targets for CTC fine-tuning: one vocabulary for Mandarin and English.

Transcripts arrive normalised by the corpus stage (en: lower-case a-z and
apostrophes; zh: Han characters). Tokens follow fairseq's letter convention:

- English: each letter a token and ``|`` after every word (fairseq's
  ``" ".join(text.replace(" ", "|")) + " |"``), so ``hi there`` is
  ``h i | t h e r e |``;
- Mandarin: each Han character a token, no word boundary (spaces in zh text
  carry nothing: CER removes them);
- at a switch from Mandarin to English a ``|`` too (the switch back is already
  marked by the English word's own ``|``): ``我们 ok`` is ``我 们 | o k |``.

The vocabulary comes from the fine-tuning transcripts only. A token of another
split that it lacks becomes ``<unk>`` in the label file and is counted, never
dropped silently; an utterance with nothing left (empty, or only unknown
tokens) is skipped and counted.

Two label sets share those tokens: ``ltr`` and ``lidltr``, the latter with a
language-ID token (``<en>`` / ``<zh>``) as the first target.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hubert.balance.lengths import ADMIT_FINETUNE_LONG, ADMIT_FINETUNE_SHORT, Item, LengthError, refusal
from hubert.fairseq.formats import dict_file, label_file, read_tsv, write_dict, write_lines, write_tsv

BOUNDARY = "|"
UNK = "<unk>"
UNK_TEXT = "\u2047"  # how a decoded <unk> reads in a hypothesis: one token that matches no reference
# fairseq's Dictionary adds these four itself; a dict file that lists one fails to load
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", UNK)
_LID = re.compile(r"^<[a-z]{2,3}>$")
LABELS = ("ltr", "lidltr")  # fairseq task.labels: {split}.ltr / dict.ltr.txt, {split}.lidltr / dict.lidltr.txt


def lid_token(lang: str) -> str:
    return f"<{lang}>"


def is_lid_token(symbol: str) -> bool:
    return bool(_LID.match(symbol))


# (first, last) code points of the Han blocks. Extensions B+ are left out: the corpus
# stage's normalisation keeps only these, and no corpus here uses the others.
HAN_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),    # CJK Unified Ideographs
    (0x3400, 0x4DBF),    # Extension A
    (0xF900, 0xFAFF),    # CJK Compatibility Ideographs
    (0x2F800, 0x2FA1F),  # CJK Compatibility Ideographs Supplement
)


def is_han(ch: str) -> bool:
    """Whether the single character ``ch`` is a Han ideograph (see HAN_RANGES)."""
    code = ord(ch)
    return any(a <= code <= b for a, b in HAN_RANGES)


def tokens(text: str) -> list[str]:
    """The letter tokens of a normalised transcript (see the module docstring)."""
    out: list[str] = []
    for word in text.split():
        run = ""
        for ch in word + " ":  # the trailing space flushes the last Latin run
            if is_han(ch) or ch == " ":
                if run:
                    if out and is_han(out[-1]):
                        out.append(BOUNDARY)  # a switch from Mandarin to English
                    out += [*run, BOUNDARY]
                    run = ""
                if ch != " ":
                    out.append(ch)
            else:
                run += ch
    return out


def text_of(symbols: Iterable[str]) -> tuple[str, str | None]:
    """(transcript, language of the first language-ID token or None) of decoded symbols:
    ``|`` is a space, Latin letters join into words, Han characters stay as they are,
    ``<unk>`` reads as one unknown character, fairseq's other specials (``<s>``,
    ``<pad>``, ``</s>``: never targets) are dropped."""
    text, lang = "", None
    for s in symbols:
        if s == UNK:
            s = UNK_TEXT
        elif s in FAIRSEQ_SPECIALS:
            continue
        elif _LID.match(s):
            lang = lang or s[1:-1]
            continue
        if s == BOUNDARY:
            text += " "
        elif text and not text.endswith(" ") and is_han(s) != is_han(text[-1]):
            text += " " + s  # a switch of script without a boundary still separates two words
        else:
            text += s
    return " ".join(text.split()), lang


def build_vocabulary(texts: Iterable[str]) -> Counter:
    """Token counts of the fine-tuning transcripts: the vocabulary."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(tokens(text))
    return counts


def dictionary_lines(counts: Counter, langs: Iterable[str] = ()) -> list[tuple[str, int]]:
    """``dict.*.txt`` rows: language-ID tokens first (when given), then the tokens by
    falling count, ties by code point: the same transcripts give the same file."""
    rows = [(lid_token(lang), 1) for lang in sorted(langs)]
    rows += sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    clash = [s for s, _ in rows if s in FAIRSEQ_SPECIALS]
    if clash:
        raise ValueError(f"transcripts contain fairseq's reserved symbols {clash}; remove them in normalisation")
    return rows


@dataclass
class SplitCount:
    """What happened to one split of one language on its way to labels."""

    utterances: int = 0
    kept: int = 0
    skipped_empty: int = 0
    skipped_unknown_only: int = 0
    skipped_too_long: int = 0
    skipped_too_short: int = 0
    tokens: int = 0
    unk_tokens: int = 0

    def skipped(self) -> int:
        return self.skipped_empty + self.skipped_unknown_only + self.skipped_too_long + self.skipped_too_short

    def as_metrics(self) -> dict[str, float]:
        return {"utterances": self.utterances, "kept": self.kept, "skipped_empty": self.skipped_empty,
                "skipped_unknown_only": self.skipped_unknown_only, "skipped_too_long": self.skipped_too_long,
                "skipped_too_short": self.skipped_too_short, "unk_tokens": self.unk_tokens,
                "unk_rate": round(self.unk_tokens / self.tokens, 4) if self.tokens else 0.0}


@dataclass
class Labelled:
    """One split's utterances that have a target: indices into the manifest, and
    their ``ltr`` and ``lidltr`` lines; counts per language."""

    keep: list[int] = field(default_factory=list)
    ltr: list[str] = field(default_factory=list)
    lidltr: list[str] = field(default_factory=list)
    counts: dict[str, SplitCount] = field(default_factory=dict)


def label_lines(texts: list[str], langs: list[str], vocabulary: set[str],
                outside: dict[int, str] | None = None) -> Labelled:
    """The label lines of a split: unknown tokens as ``<unk>`` (counted); an
    utterance with no token, or none but unknown ones, is skipped (counted), and so
    is one that ``outside`` names (index -> ``too_long`` | ``too_short``: beyond
    fine-tuning's length limits, :mod:`hubert.balance.lengths`)."""
    outside = outside or {}
    out = Labelled()
    for i, (text, lang) in enumerate(zip(texts, langs)):
        count = out.counts.setdefault(lang, SplitCount())
        count.utterances += 1
        toks = tokens(text)
        if not toks:
            count.skipped_empty += 1
            continue
        mapped = [t if t in vocabulary else UNK for t in toks]
        # the rate counts characters (not word boundaries), of every transcript, kept or skipped
        count.tokens += sum(t != BOUNDARY for t in mapped)
        count.unk_tokens += sum(t == UNK for t in mapped)
        if all(t in (UNK, BOUNDARY) for t in mapped):
            count.skipped_unknown_only += 1
            continue
        if i in outside:
            setattr(count, f"skipped_{outside[i]}", getattr(count, f"skipped_{outside[i]}") + 1)
            continue
        count.kept += 1
        out.keep.append(i)
        out.ltr.append(" ".join(mapped))
        out.lidltr.append(" ".join([lid_token(lang), *mapped]))
    return out


# ---------------------------------------------------------------- the letters stage
SPLITS = ("finetune", "valid", "test")


def write_letters(manifests: str | Path, out: str | Path, *, longest: int, shortest: int, policy: str = "skip",
                  sample_rate: int = 16000) -> dict:
    """The letters stage: the vocabulary of ``manifests/finetune.wrd``, and for each of
    finetune, valid and test (all languages, then ``{split}_{lang}``) the manifest,
    ``.wrd``, ``.lang``, ``.ltr`` and ``.lidltr`` of the utterances that have a
    target and, for finetune and valid, lie within fine-tuning's length limits
    (``shortest`` to ``longest`` samples; outside them: skipped and counted, or refused under ``policy``
    refuse). Test utterances are all kept: evaluate decodes any length. Returns the
    metrics (vocabulary size, per split and language: kept, skipped by reason,
    unknown-token rate)."""
    manifests, out = Path(manifests), Path(out)
    sources = {split: read_split(manifests, split) for split in SPLITS}
    outside: dict[str, dict[int, str]] = {"test": {}}
    for split in ("finetune", "valid"):
        root, rows, _, langs = sources[split]
        items = [Item(f"{root}/{rel}", n, lang) for (rel, n), lang in zip(rows, langs)]
        problem = refusal(items, f"fine-tuning {split}", longest=longest, shortest=shortest,
                          sample_rate=sample_rate, admit_long=ADMIT_FINETUNE_LONG, admit_short=ADMIT_FINETUNE_SHORT)
        if policy == "refuse" and problem:
            raise LengthError(f"balance.length_policy=refuse: {problem}")
        outside[split] = {i: "too_long" if it.num_samples > longest else "too_short"
                          for i, it in enumerate(items) if not shortest <= it.num_samples <= longest}
    root, rows, texts, langs = sources["finetune"]
    if not rows:
        raise ValueError(f"{manifests / 'finetune.tsv'} lists no utterance: nothing to fine-tune on; raise "
                         "balance.finetune_fraction or give the corpus transcribed training speech")
    if len(outside["finetune"]) == len(rows):
        raise ValueError(f"all {len(rows)} utterances of {manifests / 'finetune.tsv'} lie outside fine-tuning's length "
                         f"limits ({shortest}-{longest} samples): {ADMIT_FINETUNE_LONG}")
    # the tokens fine-tuning trains on: those of the utterances it keeps
    counts = build_vocabulary(t for i, t in enumerate(texts) if i not in outside["finetune"])
    # the word boundary even when the fine-tuning text has no English: else every English
    # boundary elsewhere would become <unk>
    counts.setdefault(BOUNDARY, 0)
    all_langs = sorted({lang for _, _, _, ls in sources.values() for lang in ls})
    out.mkdir(parents=True, exist_ok=True)
    for label, rows in (("ltr", dictionary_lines(counts)), ("lidltr", dictionary_lines(counts, all_langs))):
        write_dict(dict_file(out, label), [c for _, c in rows], [s for s, _ in rows])
    vocabulary = set(counts)
    metrics: dict = {"vocabulary": {"tokens": len(counts), "han": sum(is_han(t) for t in counts),
                                    "latin": sum(not is_han(t) and t != BOUNDARY for t in counts)},
                     "splits": {}}
    for split, (root, rows, texts, langs) in sources.items():
        done = label_lines(texts, langs, vocabulary, outside[split])
        metrics["splits"][split] = {lang: c.as_metrics() for lang, c in sorted(done.counts.items())}
        pos = {i: n for n, i in enumerate(done.keep)}
        for lang in [None, *sorted(set(langs))]:
            keep = [i for i in done.keep if lang is None or langs[i] == lang]
            name = split if lang is None else f"{split}_{lang}"
            write_tsv(out / f"{name}.tsv", root, (rows[i] for i in keep))
            write_lines(out / f"{name}.wrd", (texts[i] for i in keep))
            write_lines(out / f"{name}.lang", (langs[i] for i in keep))
            write_lines(label_file(out, name, "ltr"), (done.ltr[pos[i]] for i in keep))
            write_lines(label_file(out, name, "lidltr"), (done.lidltr[pos[i]] for i in keep))
    return metrics


def read_split(manifests: Path, split: str) -> tuple[str, list[tuple[str, int]], list[str], list[str]]:
    """(root, rows, transcripts, languages) of one split of the balance stage's manifests."""
    root, rows = read_tsv(manifests / f"{split}.tsv")
    texts = (manifests / f"{split}.wrd").read_text(encoding="utf-8").splitlines()
    langs = (manifests / f"{split}.lang").read_text(encoding="utf-8").splitlines()
    if not len(rows) == len(texts) == len(langs):
        raise ValueError(f"{manifests}/{split}.tsv, .wrd and .lang differ in length ({len(rows)}, {len(texts)}, "
                         f"{len(langs)} lines); re-run the balance stage (dvc repro -f balance)")
    return root, rows, texts, langs
