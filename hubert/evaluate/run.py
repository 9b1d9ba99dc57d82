"""The evaluate stage: every fine-tuned variant decodes the speaker-disjoint test
split (and a code-switched set, and real English speech), and is scored with
bootstrap intervals, against calibration floors and against the other variants.

Decoding is greedy CTC (argmax, merge repeats, drop the blank: what fairseq's
Viterbi decoder does without a language model), one utterance at a time: with
the GroupNorm feature extractor (extractor_mode default) padding changes a
batch's outputs, so nothing is padded.

The code-switched set is built here, not recorded: each item concatenates a
held-out Mandarin test utterance and a held-out English one (alternating which
comes first), with the reference transcripts joined. It measures whether one
model switches scripts within an utterance; real code-switched speech has
coarticulation at the switch that concatenation lacks.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hubert.corpus.audio import load_mono
from hubert.evaluate.scoring import (
    Errors,
    best_constant_output,
    bootstrap_interval,
    corpus_rate,
    greedy_ctc,
    paired_bootstrap,
    utterance_errors,
)
from hubert.fairseq.formats import check_vocabulary, dict_file, read_tsv
from hubert.finetune.letters import UNK_TEXT, text_of
from hubert.finetune.params import Variant
from hubert.params import from_dict

HEADLINE = {"zh": "cer", "en": "wer", "mix": "mer"}


@dataclass(frozen=True)
class RealSpeech:
    """One recording of real speech to decode beside the test split (``evaluate.real_speech``)."""

    audio: str
    text: str
    lang: str = "en"


@dataclass(frozen=True)
class EvaluateParams:
    """``evaluate``: bootstrap replicates, interval level and seed; the pairs of variants
    to compare (paired bootstrap of a minus b on the same utterances); how many
    code-switched items to build; real recordings to decode (a missing file is
    skipped with a warning: it may live outside the repository)."""

    seed: int = 0
    replicates: int = 1000
    level: float = 0.95
    compare: tuple = ()
    codeswitch_utterances: int = 50
    real_speech: tuple = ()

    def __post_init__(self) -> None:
        if self.replicates < 10 or not 0 < self.level < 1:
            raise ValueError(f"evaluate: replicates={self.replicates} must be >= 10 and level={self.level} in (0, 1)")
        for pair in self.compare:
            if len(pair) != 2:
                raise ValueError(f"evaluate.compare: {pair!r} is not a pair [a, b] of variant names")


def evaluate_params(section: dict[str, Any]) -> EvaluateParams:
    p = from_dict(EvaluateParams, section, "evaluate")
    real = tuple(from_dict(RealSpeech, r, "evaluate.real_speech[]") if isinstance(r, dict) else r
                 for r in p.real_speech)
    return EvaluateParams(p.seed, p.replicates, p.level, tuple(tuple(c) for c in p.compare),
                          p.codeswitch_utterances, real)


# ---------------------------------------------------------------- what is decoded
@dataclass
class Item:
    """One utterance to decode: its id, language (en, zh or mix), reference, and audio
    (a manifest path, or several concatenated)."""

    id: str
    lang: str
    ref: str
    paths: list[Path] = field(default_factory=list)
    set: str = "test"


def test_items(letters: str | Path) -> list[Item]:
    """The test split's utterances that have a transcript (data/letters/test.*)."""
    letters = Path(letters)
    root, rows = read_tsv(letters / "test.tsv")
    texts = (letters / "test.wrd").read_text(encoding="utf-8").splitlines()
    langs = (letters / "test.lang").read_text(encoding="utf-8").splitlines()
    return [Item(Path(rel).stem, lang, text, [Path(root) / rel]) for (rel, _), text, lang in zip(rows, texts, langs)]


def codeswitch_items(tests: list[Item], n: int, seed: int) -> list[Item]:
    """``n`` items of one zh and one en test utterance each (seeded pairing; every
    other item puts English first); none when a language has no test utterance."""
    zh = [t for t in tests if t.lang == "zh"]
    en = [t for t in tests if t.lang == "en"]
    if not zh or not en or n <= 0:
        return []
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.choice(zh), rng.choice(en)
        first, second = (a, b) if i % 2 == 0 else (b, a)
        out.append(Item(f"mix{i:04d}_{first.id}+{second.id}", "mix", f"{first.ref} {second.ref}",
                        first.paths + second.paths, set="codeswitch"))
    return out


def real_items(real: tuple[RealSpeech, ...]) -> list[Item]:
    out = []
    for r in real:
        path = Path(r.audio)
        if not path.is_file():
            print(f"evaluate: real speech {path} not found: skipped (evaluate.real_speech lists it)")
            continue
        from hubert.corpus.textgen import normalize

        out.append(Item(path.stem, r.lang, normalize(r.lang, r.text), [path], set="real"))
    return out


# ---------------------------------------------------------------- decoding
class Decoder:
    """A fine-tuned checkpoint, decoding one waveform at a time (greedy CTC)."""

    def __init__(self, checkpoint: str | Path) -> None:
        import torch

        from hubert.fairseq.finetuned import load_finetuned

        self.torch = torch
        self.model, task = load_finetuned(checkpoint)
        self.symbols = list(task.target_dictionary.symbols)
        self.nspecial = task.target_dictionary.nspecial
        self.blank = task.target_dictionary.bos()  # fairseq's CTC blank is <s>, index 0
        self.normalize = bool(task.cfg.normalize)

    def __call__(self, wav: np.ndarray) -> tuple[str, str | None]:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]
            if self.normalize:
                x = torch.nn.functional.layer_norm(x, x.shape[1:])
            out = self.model(source=x, padding_mask=None)
            emissions = out["encoder_out"][:, 0].float().numpy()  # (T, V): fairseq's hubert_ctc is time-major
        return text_of(self.symbols[i] for i in greedy_ctc(emissions, blank=self.blank))


# ---------------------------------------------------------------- scoring
def _summary(errors: list[Errors], p: EvaluateParams, seed: int) -> dict[str, float]:
    low, high = bootstrap_interval(errors, replicates=p.replicates, seed=seed, level=p.level)
    total = sum(errors, Errors())
    ref = max(total.ref, 1)
    return {"rate": round(corpus_rate(errors), 4), "low": round(low, 4), "high": round(high, 4),
            "sub": round(total.sub / ref, 4), "del": round(total.dele / ref, 4), "ins": round(total.ins / ref, 4)}


def score_variant(rows: list[dict[str, Any]], p: EvaluateParams) -> dict[str, Any]:
    """Metrics of one variant's decoded rows: per language (zh, en, mix) every metric
    with its interval and S/D/I rates, the hypothesis <unk> rate, language-ID accuracy."""
    out: dict[str, Any] = {}
    scored = [r for r in rows if r["set"] != "real"]
    for lang in ("zh", "en", "mix"):
        mine = [r for r in scored if r["lang"] == lang]
        if not mine:
            continue
        per: dict[str, Any] = {"utterances": len(mine)}
        for metric in mine[0]["errors"]:
            per[metric] = _summary([Errors(*r["errors"][metric]) for r in mine], p, p.seed)
        hyp_chars = sum(len(r["hyp"].replace(" ", "")) for r in mine)
        per["unk_rate"] = round(sum(r["hyp"].count(UNK_TEXT) for r in mine) / hyp_chars, 4) if hyp_chars else 0.0
        out[lang] = per
    with_lid = [r for r in scored if r["lid_expected"] and r["lang"] != "mix"]
    if with_lid:  # the first language-ID token against the utterance's language
        out["lid_accuracy"] = round(float(np.mean([r["lid"] == r["lang"] for r in with_lid])), 4)
    for r in rows:
        if r["set"] == "real" and "wer" in r["errors"]:
            out.setdefault("real_speech", {})[r["id"]] = {"wer": round(Errors(*r["errors"]["wer"]).rate, 4)}
    return out


def floors(finetune_texts: dict[str, list[str]], rows: list[dict[str, Any]]) -> tuple[dict, dict]:
    """Calibration floors per language on the test references: the empty output, and the
    best constant output made of the most frequent fine-tuning tokens. (metrics, texts)."""
    metrics, texts = {}, {}
    for lang, metric in (("zh", "cer"), ("en", "wer")):
        refs = [r["ref"] for r in rows if r["lang"] == lang and r["set"] == "test"]
        if not refs or not finetune_texts.get(lang):
            continue
        constant, rate = best_constant_output(finetune_texts[lang], refs, lang, metric)
        empty = corpus_rate([utterance_errors(ref, "", lang)[metric] for ref in refs])
        metrics[lang] = {f"empty_{metric}": round(empty, 4), f"constant_{metric}": round(rate, 4)}
        texts[lang] = constant
    return metrics, texts


def compare(a: list[dict], b: list[dict], p: EvaluateParams) -> dict[str, Any]:
    """Paired bootstrap of a minus b (headline metric per language) on the utterances both decoded."""
    out = {}
    for lang, metric in HEADLINE.items():
        ra = {r["id"]: r for r in a if r["lang"] == lang and r["set"] != "real"}
        rb = {r["id"]: r for r in b if r["lang"] == lang and r["set"] != "real"}
        shared = sorted(set(ra) & set(rb))
        if not shared:
            continue
        result = paired_bootstrap([Errors(*ra[i]["errors"][metric]) for i in shared],
                                  [Errors(*rb[i]["errors"][metric]) for i in shared],
                                  replicates=p.replicates, seed=p.seed, level=p.level)
        out[f"{lang}_{metric}"] = {k: round(v, 4) for k, v in result.items()}
    return out


def evaluate(p: EvaluateParams, declared: dict[str, Variant], *, finetuned: str | Path, letters: str | Path,
             out: str | Path, sample_rate: int) -> dict[str, Any]:
    """Decode and score every declared variant; writes out/<variant>/utterances.jsonl
    (reference, hypothesis, per-metric S/D/I/N per utterance) and out/floors.json; returns
    the metrics (numbers only)."""
    finetuned, letters, out = Path(finetuned), Path(letters), Path(out)
    tests = test_items(letters)
    items = tests + codeswitch_items(tests, p.codeswitch_utterances, p.seed) + real_items(p.real_speech)
    audio: dict[Path, np.ndarray] = {}

    def waveform(item: Item) -> np.ndarray:
        for path in item.paths:
            if path not in audio:
                audio[path] = load_mono(path, sample_rate)
        return np.concatenate([audio[path] for path in item.paths])

    metrics: dict[str, Any] = {}
    decoded: dict[str, list[dict]] = {}
    for name, variant in declared.items():
        checkpoint = finetuned / name / "checkpoint.pt"
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint} does not exist: run its stage first (dvc repro finetune@{name})")
        decoder = Decoder(checkpoint)
        vocabulary = dict_file(letters, "lidltr" if variant.lid else "ltr")
        check_vocabulary(decoder.symbols[decoder.nspecial:], vocabulary, checkpoint,
                         f"e.g. a model fine-tuned before the letters stage changed: re-run it (dvc repro "
                         f"finetune@{name})")
        langs = set(variant.languages)
        mine = [it for it in items if it.lang in langs or (it.lang == "mix" and {"en", "zh"} <= langs)]
        start, rows = time.monotonic(), []
        for it in mine:
            hyp, lid = decoder(waveform(it))
            errors = utterance_errors(it.ref, hyp, it.lang)
            rows.append({"id": it.id, "set": it.set, "lang": it.lang, "ref": it.ref, "hyp": hyp, "lid": lid,
                         "lid_expected": variant.lid,
                         "errors": {m: [e.sub, e.dele, e.ins, e.ref] for m, e in errors.items()}})
        seconds = time.monotonic() - start
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "utterances.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        metrics[name] = score_variant(rows, p)
        metrics[name]["decode_s"] = round(seconds, 1)
        decoded[name] = rows
        summary = ", ".join(f"{lang} {HEADLINE[lang]} {metrics[name][lang][HEADLINE[lang]]['rate']:.3f}"
                            for lang in HEADLINE if lang in metrics[name])
        print(f"evaluate {name}: {summary} ({len(rows)} utterances, {seconds:.0f} s)")

    finetune_texts: dict[str, list[str]] = {}
    ft_texts = (letters / "finetune.wrd").read_text(encoding="utf-8").splitlines()
    ft_langs = (letters / "finetune.lang").read_text(encoding="utf-8").splitlines()
    for text, lang in zip(ft_texts, ft_langs):
        finetune_texts.setdefault(lang, []).append(text)
    all_rows = [r for rows in decoded.values() for r in rows]
    floor_metrics, floor_texts = floors(finetune_texts, list({r["id"]: r for r in all_rows}.values()))
    metrics["floors"] = floor_metrics
    (out / "floors.json").write_text(json.dumps({"constant_output": floor_texts}, ensure_ascii=False, indent=2) + "\n",
                                     encoding="utf-8")
    comparisons = {}
    for a, b in p.compare:
        if a in decoded and b in decoded:
            comparisons[f"{a}_minus_{b}"] = compare(decoded[a], decoded[b], p)
        else:
            print(f"evaluate: compare [{a}, {b}] skipped: finetune.variants lacks {a if a not in decoded else b}")
    metrics["compare"] = comparisons
    return metrics
