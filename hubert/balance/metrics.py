"""What the balance stage reports: hours, utterances and speakers per split and
language, pretraining shares before and after balancing, and the test set's
out-of-vocabulary rate against the fine-tuning transcripts."""

from __future__ import annotations

from typing import Any

from hubert.balance.splits import hours_by_lang, temperature_probs
from hubert.corpus.records import Utterance


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
        "hours": {s: {lang: round(h, 4) for lang, h in hours_by_lang(u, sample_rate).items()}
                  for s, u in splits.items()},
        "utterances": {s: {lang: sum(x.lang == lang for x in u) for lang in langs} for s, u in splits.items()},
        "speakers": {s: {lang: len({x.speaker for x in u if x.lang == lang}) for lang in langs}
                     for s, u in splits.items()},
        "pretrain": {
            "hours_before": {lang: round(natural[lang], 4) for lang in langs},
            "hours_after": {lang: round(after.get(lang, 0.0), 4) for lang in langs},
            "proportion_natural": share(natural),
            "proportion_target": {lang: round(p, 4) for lang, p in temperature_probs(natural, alpha).items()},
            "proportion_effective": share(after),
            # how many times an epoch of the list presents each language's audio (>= 1: nothing dropped)
            "repeats": {lang: round(after.get(lang, 0.0) / natural[lang], 4) for lang in langs},
            "distinct_utterances_used": {lang: len({x.id for x in pretrain if x.lang == lang}) for lang in langs},
            "utterances": len(pretrain),
        },
        "oov_rate_test_vs_finetune": oov_rate(splits["test"], splits["finetune"]),
    }
