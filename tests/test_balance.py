"""hubert.balance: temperature sampling against hand-computed proportions,
speaker-disjoint splits, the fine-tuning subset, OOV rate and the manifests."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest

from hubert.balance.metrics import balance_metrics, oov_rate, tokens
from hubert.balance.splits import (
    SPLITS,
    BalanceConfig,
    balanced_list,
    hours_by_lang,
    split_by_speaker,
    temperature_probs,
    write_fairseq_manifest,
)
from hubert.corpus.records import Utterance

RATE = 16000


def utts(lang: str, speakers: int, per_speaker: int, seconds: float = 2.0, text: str = "x") -> list[Utterance]:
    return [Utterance(f"{lang}_s{s}_{k}", lang, f"{lang}_s{s}", f"audio/{lang}/{lang}_s{s}_{k}.wav",
                      int(seconds * RATE), text)
            for s in range(speakers) for k in range(per_speaker)]


def shares(items: list[Utterance]) -> dict[str, float]:
    hours = hours_by_lang(items, RATE)
    total = sum(hours.values())
    return {lang: h / total for lang, h in hours.items()}


# ---------------------------------------------------------------- temperature sampling
def test_temperature_probs_hand_computed():
    hours = {"en": 3.0, "zh": 1.0}
    natural = temperature_probs(hours, 1.0)
    assert natural == pytest.approx({"en": 0.75, "zh": 0.25})
    assert temperature_probs(hours, 0.0) == pytest.approx({"en": 0.5, "zh": 0.5})
    # alpha 0.5: sqrt(0.75) = 0.8660, sqrt(0.25) = 0.5, normalised by 1.3660.
    sqrt = temperature_probs(hours, 0.5)
    assert sqrt["en"] == pytest.approx(0.634, abs=5e-4) and sqrt["zh"] == pytest.approx(0.366, abs=5e-4)
    assert sum(sqrt.values()) == pytest.approx(1.0)


def test_temperature_probs_scale_free_and_ignores_empty_languages():
    assert temperature_probs({"en": 300.0, "zh": 100.0}, 0.3) == pytest.approx(
        temperature_probs({"en": 3.0, "zh": 1.0}, 0.3))
    assert temperature_probs({"en": 2.0, "zh": 0.0}, 0.5) == {"en": 1.0}
    with pytest.raises(ValueError, match="no audio"):
        temperature_probs({"en": 0.0, "zh": 0.0}, 0.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 1.5}, "balance.alpha"), ({"alpha": -0.1}, "balance.alpha"),
    ({"finetune_fraction": 0.0}, "finetune_fraction"), ({"finetune_fraction": 1.2}, "finetune_fraction"),
])
def test_balance_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BalanceConfig(**kwargs)


def test_balanced_list_hits_target_proportions_without_dropping_anything():
    train = utts("en", 6, 10) + utts("zh", 2, 5)  # 60 x 2 s = 120 s en, 10 x 2 s = 20 s zh
    natural = shares(train)
    assert natural == pytest.approx({"en": 120 / 140, "zh": 20 / 140})
    for alpha in (0.0, 0.3, 0.5, 0.8):
        out = balanced_list(train, alpha, seed=0, sample_rate=RATE)
        target = temperature_probs(hours_by_lang(train, RATE), alpha)
        total = sum(hours_by_lang(out, RATE).values()) * 3600
        for lang, p in shares(out).items():
            assert p == pytest.approx(target[lang], abs=1.0 / total)  # half an utterance of 2 s
        assert {u.id for u in out} == {u.id for u in train}  # every utterance, at least once
        # en, the language temperature sampling favours least, is kept once: 120 s, and zh grows to its share
        assert hours_by_lang(out, RATE)["en"] == pytest.approx(120 / 3600)


def test_balanced_list_upsamples_the_smaller_language_only():
    train = utts("en", 4, 15) + utts("zh", 2, 10)  # 120 s : 40 s = 3 : 1
    out = balanced_list(train, 0.0, seed=0, sample_rate=RATE)  # uniform: 120 s each
    counts = Counter(u.id for u in out)
    zh = [u for u in train if u.lang == "zh"]
    en = [u for u in train if u.lang == "en"]
    assert all(counts[u.id] == 3 for u in zh)  # 40 s -> 120 s: every zh utterance exactly three times
    assert all(counts[u.id] == 1 for u in en)  # nothing of en is dropped
    assert set(counts) == {u.id for u in train}
    half = balanced_list(utts("en", 4, 15) + utts("zh", 2, 8), 0.0, seed=0, sample_rate=RATE)  # 120 s : 32 s
    zh_counts = Counter(u.id for u in half if u.lang == "zh")
    assert sorted(set(zh_counts.values())) == [3, 4] and sum(zh_counts.values()) * 2 == 120  # 3 copies + 12 of 16


def test_balanced_list_alpha_one_returns_the_same_list():
    en, zh = utts("en", 3, 4), utts("zh", 3, 2)
    interleaved = [u for pair in zip(en, zh + en[len(zh):]) for u in pair]
    for train in (en + zh, interleaved):
        assert balanced_list(train, 1.0, seed=5, sample_rate=RATE) == train


def test_balanced_list_is_deterministic_from_seed():
    train = utts("en", 6, 10) + utts("zh", 2, 7)
    a = balanced_list(train, 0.5, seed=1, sample_rate=RATE)
    assert a == balanced_list(train, 0.5, seed=1, sample_rate=RATE)
    others = [balanced_list(train, 0.5, seed=s, sample_rate=RATE) for s in (2, 3, 4)]
    assert any(o != a for o in others)
    assert all(Counter(u.lang for u in o) == Counter(u.lang for u in a) for o in others)  # same sizes, other picks
    assert all({u.id for u in o} == {u.id for u in train} for o in [a, *others])


# ---------------------------------------------------------------- speaker-disjoint splits
def _speakers(items):
    return {u.speaker for u in items}


def test_split_by_speaker_is_disjoint_and_complete():
    data = utts("en", 6, 5) + utts("zh", 5, 4)
    cfg = BalanceConfig(valid_speakers=1, test_speakers=2, finetune_fraction=0.25)
    splits = split_by_speaker(data, cfg)
    train, valid, test, ft = (splits[s] for s in SPLITS)
    assert not _speakers(train) & _speakers(valid)
    assert not _speakers(train) & _speakers(test)
    assert not _speakers(valid) & _speakers(test)
    assert sorted(u.id for u in train + valid + test) == sorted(u.id for u in data)  # nothing lost or doubled
    for lang in ("en", "zh"):
        assert len(_speakers([u for u in valid if u.lang == lang])) == 1
        assert len(_speakers([u for u in test if u.lang == lang])) == 2
        # every speaker of a split keeps all of their utterances
        assert all(len([u for u in s if u.speaker == spk]) == (5 if lang == "en" else 4)
                   for s in (train, valid, test) for spk in _speakers(s) if spk.startswith(lang))
    # finetune is a subset of train: fraction 0.25 of each language's train utterances
    assert {u.id for u in ft} <= {u.id for u in train}
    assert Counter(u.lang for u in ft) == {"en": round(0.25 * 15), "zh": round(0.25 * 8)}
    assert len({u.id for u in ft}) == len(ft)


def test_split_by_speaker_finetune_at_least_one_and_all():
    data = utts("en", 3, 2)
    small = split_by_speaker(data, BalanceConfig(valid_speakers=1, test_speakers=1, finetune_fraction=0.01))
    assert len(small["finetune"]) == 1
    full = split_by_speaker(data, BalanceConfig(valid_speakers=1, test_speakers=1, finetune_fraction=1.0))
    assert full["finetune"] == full["train"]


def test_split_by_speaker_is_deterministic_from_seed():
    data = utts("en", 8, 3) + utts("zh", 8, 3)
    cfg = BalanceConfig(seed=0, valid_speakers=2, test_speakers=2)
    first = split_by_speaker(data, cfg)
    assert first == split_by_speaker(list(data), cfg)
    tests = {frozenset(_speakers(split_by_speaker(data, BalanceConfig(seed=s, valid_speakers=2,
                                                                           test_speakers=2))["test"]))
             for s in range(5)}
    assert len(tests) > 1  # the seed chooses which voices are held out


def test_too_few_speakers_is_a_clear_error():
    data = utts("en", 5, 2) + utts("zh", 2, 3)
    with pytest.raises(ValueError) as err:
        split_by_speaker(data, BalanceConfig(valid_speakers=1, test_speakers=1))
    message = str(err.value)
    assert "zh has 2 speakers" in message and "3 are needed" in message and "balance.valid_speakers" in message


# ---------------------------------------------------------------- OOV, manifests, metrics
def test_oov_rate_hand_built():
    reference = [Utterance("r1", "en", "a", "p", 1, "the cat sat"), Utterance("r2", "zh", "b", "p", 1, "你好")]
    test = [Utterance("t1", "en", "c", "p", 1, "the dog sat"), Utterance("t2", "en", "c", "p", 1, "cat cat"),
            Utterance("t3", "zh", "d", "p", 1, "你们好")]
    # en: the dog sat cat cat -> 1 of 5 unseen; zh: 你 们 好 -> 1 of 3 unseen
    assert oov_rate(test, reference) == {"en": 0.2, "zh": pytest.approx(0.3333, abs=1e-4)}
    assert oov_rate(test, []) == {"en": 1.0, "zh": 1.0}
    assert tokens("en", "a b  c") == ["a", "b", "c"] and tokens("zh", "你 好") == ["你", "好"]


def test_write_fairseq_manifest_line_aligned(tmp_path):
    rows = [Utterance("a", "en", "s", "audio/en/s/a.wav", 16000, "hello world"),
            Utterance("b", "zh", "t", "audio/zh/t/b.wav", 24000, "你好")]
    write_fairseq_manifest(tmp_path / "m", "train", "data/corpus", rows)
    assert (tmp_path / "m" / "train.tsv").read_text(encoding="utf-8") == (
        "data/corpus\naudio/en/s/a.wav\t16000\naudio/zh/t/b.wav\t24000\n")
    assert (tmp_path / "m" / "train.lang").read_text(encoding="utf-8") == "en\nzh\n"
    assert (tmp_path / "m" / "train.wrd").read_text(encoding="utf-8") == "hello world\n你好\n"


def test_balance_metrics_numbers():
    data = utts("en", 5, 6, seconds=3.0) + utts("zh", 4, 3, seconds=2.0)
    cfg = BalanceConfig(valid_speakers=1, test_speakers=1)
    splits = split_by_speaker(data, cfg)
    pretrain = balanced_list(splits["train"], cfg.alpha, cfg.seed, RATE)
    m = balance_metrics(splits, pretrain, cfg.alpha, RATE)
    # train: 3 en speakers x 6 x 3 s = 54 s, 2 zh speakers x 3 x 2 s = 12 s
    assert m["pretrain"]["hours_before"] == {"en": round(54 / 3600, 4), "zh": round(12 / 3600, 4)}
    assert m["pretrain"]["proportion_natural"] == {"en": round(54 / 66, 4), "zh": round(12 / 66, 4)}
    want = {"en": math.sqrt(54 / 66), "zh": math.sqrt(12 / 66)}
    z = sum(want.values())
    assert m["pretrain"]["proportion_target"] == pytest.approx({k: v / z for k, v in want.items()}, abs=1e-4)
    for lang, p in m["pretrain"]["proportion_effective"].items():
        assert p == pytest.approx(m["pretrain"]["proportion_target"][lang], abs=0.05)
    assert m["speakers"]["valid"] == {"en": 1, "zh": 1} and m["speakers"]["train"] == {"en": 3, "zh": 2}
    assert m["utterances"]["test"] == {"en": 6, "zh": 3} and m["pretrain"]["utterances"] == len(pretrain)


def test_the_finetuning_subset_is_drawn_from_transcribed_speech_only():
    """Untranscribed speech (corpus.imports[].transcripts optional) is pretrained on, never fine-tuned on."""
    spoken = utts("en", 6, 10) + [replace(u, id=u.id + "_raw", text="") for u in utts("en", 6, 10)]
    cfg = BalanceConfig(valid_speakers=1, test_speakers=1, finetune_fraction=0.5)
    splits = split_by_speaker(spoken, cfg)
    assert any(not u.text for u in splits["train"])
    assert splits["finetune"] and all(u.text for u in splits["finetune"])
    assert len(splits["finetune"]) == round(0.5 * sum(1 for u in splits["train"] if u.text))
