"""hubert.balance.lengths and the balance stage's length check: every utterance against
what the training stages admit, decided before any training starts."""

from __future__ import annotations

import json

import pytest

from hubert.balance.lengths import (
    RECEPTIVE_FIELD,
    Item,
    LengthError,
    Limits,
    check_splits,
    finetune_min_samples,
    limits_of_sections,
    skipped_total,
)
from hubert.labels.hubert_layers import conv_frames
from hubert.params import compose
from hubert.pretrain.params import CONV_KERNELS_STRIDES
from tests.conftest import REPO

LIMITS = Limits(finetune_max=100_000, finetune_min=4_560, pretrain_min=16_000)


def test_the_masking_minimum_gives_the_frames_both_ways_of_counting():
    assert RECEPTIVE_FIELD == 400
    n = finetune_min_samples(True, 0.75, 10)  # fairseq's base_10h masking
    # the finetune stage's own check counts samples // 320 frames; fairseq's CNN gives conv_frames
    assert n // 320 >= 10 / 0.75 and conv_frames(n, CONV_KERNELS_STRIDES) >= 10 + 3
    assert conv_frames(n - 1, CONV_KERNELS_STRIDES) < conv_frames(n, CONV_KERNELS_STRIDES)  # the shortest such
    assert finetune_min_samples(False, 0.75, 10) == finetune_min_samples(True, 0.0, 10) == 400  # one frame
    assert finetune_min_samples(True, 0.5, 10) == 20 * 320 + 80


def splits(**lengths: list[int]) -> dict[str, list[Item]]:
    out = {s: [] for s in ("train", "valid", "test", "finetune")}
    for split, ns in lengths.items():
        out[split] = [Item(f"data/corpus/{split}{i}.wav", n, "en" if i % 2 else "zh") for i, n in enumerate(ns)]
    return out


def test_skip_counts_what_each_stage_leaves_out():
    counts = check_splits(splits(train=[8_000, 200_000, 48_000], valid=[8_000, 560_000],
                                 test=[560_000, 48_000], finetune=[200_000, 4_000, 48_000]),
                          LIMITS, "skip", 16000)
    assert counts["finetune"] == {"too_long": {"en": 0, "zh": 1}, "too_short": {"en": 1, "zh": 0}}
    assert counts["finetune_valid"] == {"too_long": {"en": 1, "zh": 0}, "too_short": {"en": 0, "zh": 0}}
    # pretraining crops long clips: only the short ones are left out
    assert counts["pretrain_train"] == {"too_short": {"en": 0, "zh": 1}}
    assert counts["pretrain_valid"] == {"too_short": {"en": 0, "zh": 1}}
    assert counts["test_decoded_longer_than_max_tokens"] == {"en": 0, "zh": 1}
    assert (counts["shortest_s"], counts["longest_s"]) == (0.25, 35.0)
    assert skipped_total(counts) == {"finetune too_long": 1, "finetune too_short": 1, "finetune_valid too_long": 1,
                                     "pretrain_train too_short": 1, "pretrain_valid too_short": 1}


def test_refuse_names_the_longest_their_files_and_the_param_that_admits_them():
    with pytest.raises(LengthError) as err:
        check_splits(splits(train=[48_000], valid=[48_000], test=[48_000],
                            finetune=[150_000, 560_000, 48_000, 120_000]), LIMITS, "refuse", 16000)
    message = str(err.value)
    assert "3 fine-tuning finetune utterance(s) longer than 100000 samples (6.25 s)" in message
    assert message.index("finetune1.wav (35.00 s)") < message.index("finetune0.wav (9.38 s)") < \
        message.index("finetune3.wav (7.50 s)")
    assert "raise finetune.batch.max_tokens" in message and "balance.length_policy=skip" in message


def test_refuse_names_utterances_pretraining_would_leave_out():
    with pytest.raises(LengthError, match=r"1 pretraining train utterance\(s\) shorter than 16000 samples "
                                          r"\(1.00 s\): data/corpus/train1.wav \(0.50 s\).*pretrain.batch."
                                          r"min_sample_size"):
        check_splits(splits(train=[48_000, 8_000], valid=[48_000], test=[48_000], finetune=[48_000]),
                     LIMITS, "refuse", 16000)
    # within every limit: refuse has nothing to refuse
    assert skipped_total(check_splits(splits(train=[48_000], valid=[48_000], test=[48_000], finetune=[48_000]),
                                      LIMITS, "refuse", 16000)) == {}


def test_an_unknown_policy_is_named():
    with pytest.raises(ValueError, match="balance.length_policy='crop'"):
        check_splits(splits(), LIMITS, "crop", 16000)


# ---------------------------------------------------------------- the balance stage
def balance(tmp_path, tiny_corpus, *overrides: str):
    from stages import balance as balance_stage

    params = tmp_path / "params.yaml"
    params.write_text(compose(REPO / "params", ["profile=tiny", *overrides]), encoding="utf-8")
    return balance_stage.main(["--params", str(params), "--corpus", str(tiny_corpus), "--out",
                               str(tmp_path / "manifests"), "--metrics", str(tmp_path / "balance.json")])


def test_the_balance_stage_counts_lengths_beyond_the_limits(tmp_path, tiny_corpus, capsys):
    metrics = balance(tmp_path, tiny_corpus, "finetune.batch.max_tokens=40000")
    lengths = json.loads((tmp_path / "balance.json").read_text())["lengths"]
    assert lengths == metrics["lengths"]
    too_long = sum(lengths["finetune"]["too_long"].values()) + sum(lengths["finetune_valid"]["too_long"].values())
    assert too_long > 0 and lengths["longest_s"] > 2.5
    assert "balance.length_policy=skip, left out of that stage only" in capsys.readouterr().out
    # skip leaves the manifests whole: the letters stage leaves them out of fine-tuning
    ft = (tmp_path / "manifests" / "finetune.tsv").read_text().splitlines()[1:]
    assert max(int(line.split("\t")[1]) for line in ft) > 40000


def test_the_balance_stage_refuses_before_writing_anything(tmp_path, tiny_corpus):
    with pytest.raises(LengthError, match=r"longer than 40000 samples \(2.50 s\).*finetune.batch.max_tokens"):
        balance(tmp_path, tiny_corpus, "finetune.batch.max_tokens=40000", "balance.length_policy=refuse")
    assert not (tmp_path / "manifests").exists() and not (tmp_path / "balance.json").exists()
    with pytest.raises(ValueError, match="balance.length_policy='sometimes'"):
        balance(tmp_path, tiny_corpus, "balance.length_policy=sometimes")


@pytest.mark.parametrize("profile, finetune_long, pretrain_short", [
    ("tiny", 3, 1), ("demo", 1, 1), ("demo-realistic", 1, 1), ("base", 0, 2)])
def test_real_lengths_on_every_profile(profile, finetune_long, pretrain_short):
    """0.5 s to 35.8 s (LibriSpeech runs to 35 s) against each profile's composed limits: what is
    too long for fine-tuning (tiny 6.25 s, demo 20 s, base 200 s) or too short for pretraining
    (1 s, base 2 s) is decided and counted here, never a crash after pretraining."""
    import yaml

    params = yaml.safe_load(compose(REPO / "params", [f"profile={profile}"]))
    limits = limits_of_sections(params["finetune"], params["pretrain"])
    seconds = [0.5, 1.5, 7.1, 11.9, 35.8]
    items = [Item(f"u{i}.flac", int(s * 16000), "en") for i, s in enumerate(seconds)]
    counts = check_splits({"train": items, "valid": items, "test": items, "finetune": items}, limits,
                          params["balance"]["length_policy"], 16000)
    assert params["balance"]["length_policy"] == "skip"  # the safe default everywhere
    assert counts["finetune"] == {"too_long": {"en": finetune_long}, "too_short": {"en": 0}}
    assert counts["finetune_valid"] == counts["finetune"]
    assert counts["pretrain_train"]["too_short"]["en"] == pretrain_short
    assert counts["test_decoded_longer_than_max_tokens"]["en"] == finetune_long  # decoded all the same
