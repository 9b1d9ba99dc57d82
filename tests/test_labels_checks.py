"""hubert.labels.checks: every check with the bad input it exists for, and the derived label rate."""

from __future__ import annotations

import json

import pytest

from hubert.fairseq.formats import DictionaryError
from hubert.labels.checks import (
    LabelCountError,
    LabelLengthError,
    LabelRateError,
    check_dictionary,
    check_label_lengths,
    check_label_rate,
    check_labels,
    estimate_frame_rate,
    read_label_rate,
    write_label_rate,
)


def _manifest(path, samples: list[int]):
    path.write_text("/corpus\n" + "".join(f"u{i}.wav\t{n}\n" for i, n in enumerate(samples)))
    return path


def _labels(path, counts: list[int], unit: int = 1):
    path.write_text("".join(" ".join([str(unit)] * n) + "\n" for n in counts))
    return path


def _dict(path, k: int):
    path.write_text("".join(f"{i} 1\n" for i in range(k)))
    return path


@pytest.fixture
def files(tmp_path):
    samples = [32000, 48000, 16480]  # 2 s, 3 s, 1.03 s
    mfcc_frames = [1 + (n - 400) // 160 for n in samples]  # 198, 298, 101
    return {"tsv": _manifest(tmp_path / "train.tsv", samples), "km": _labels(tmp_path / "train.km", mfcc_frames),
            "dict": _dict(tmp_path / "dict.km.txt", 5), "dir": tmp_path}


def test_good_labels_pass(files):
    write_label_rate(files["dir"], 100, 597, 6.03)
    assert check_labels(files["tsv"], files["km"], files["dict"], 100) == {
        "utterances": 3, "n_clusters": 5, "label_rate": 100.0}


def test_label_count_mismatch(files):
    _labels(files["km"], [198, 298])  # one shard missing, or another manifest
    with pytest.raises(LabelCountError, match=r"2 label lines but .*train.tsv lists 3") as err:
        check_labels(files["tsv"], files["km"], files["dict"], 100)
    assert str(files["km"]) in str(err.value) and "re-run" in str(err.value)


def test_wrong_label_rate_fails_the_length_check(files):
    with pytest.raises(LabelLengthError, match="look like 100 Hz") as err:
        check_label_lengths(files["tsv"], files["km"], 50)
    assert "3 of 3 lines" in str(err.value) and str(files["km"]) in str(err.value)


def test_length_tolerance_is_fairseqs_tenth_of_a_second(tmp_path):
    tsv = _manifest(tmp_path / "a.tsv", [32000])  # 2.0 s
    check_label_lengths(tsv, _labels(tmp_path / "ok.km", [191]), 100)  # 0.09 s short: fairseq accepts
    with pytest.raises(LabelLengthError, match="line 1"):
        check_label_lengths(tsv, _labels(tmp_path / "bad.km", [189]), 100)  # 0.11 s short


def test_empty_dictionary(files):
    files["dict"].write_text("")
    with pytest.raises(DictionaryError, match="empty.*<unk>"):
        check_labels(files["tsv"], files["km"], files["dict"], 100)


def test_appended_dictionary(files):
    files["dict"].write_text(files["dict"].read_text() * 2)  # fairseq README's `>>` run twice
    with pytest.raises(DictionaryError, match="already on line 1.*appended"):
        check_dictionary(files["km"], files["dict"])


def test_dictionary_smaller_than_the_labels(files):
    _labels(files["km"], [198, 298, 101], unit=7)
    with pytest.raises(DictionaryError, match="max label 7 but .* has 5 units"):
        check_dictionary(files["km"], files["dict"])


def test_malformed_dictionary_and_labels(files):
    files["dict"].write_text("0 1\n2 1\n1 1\n")
    with pytest.raises(DictionaryError, match="not the units 0..2 in order"):
        check_dictionary(files["km"], files["dict"])
    files["dict"].write_text("0\n")
    with pytest.raises(DictionaryError, match="'symbol count'"):
        check_dictionary(files["km"], files["dict"])
    _dict(files["dict"], 5)
    files["km"].write_text("1 2 x\n")
    with pytest.raises(DictionaryError, match="non-integer"):
        check_dictionary(files["km"], files["dict"])


def test_label_rate_vs_feature_rate(files):
    write_label_rate(files["dir"], 100, 597, 6.03)
    with pytest.raises(LabelRateError, match="label_rate=50 but the labels were made from 100 Hz"):
        check_labels(files["tsv"], files["km"], files["dict"], 50)
    with pytest.raises(LabelRateError, match="set label_rate=50"):
        check_label_rate(100, 50, "x")


def test_label_rate_file_round_trip(tmp_path):
    with pytest.raises(LabelRateError, match="re-run"):
        read_label_rate(tmp_path)
    path = write_label_rate(tmp_path, 50, 1000, 20.5)
    assert path.name == "label_rate.json"
    assert json.loads(path.read_text()) == {"label_rate": 50.0, "frames": 1000, "audio_seconds": 20.5}
    assert read_label_rate(tmp_path) == 50.0


@pytest.mark.parametrize("frames_of,rate", [
    (lambda n: 1 + (n - 400) // 160, 100.0),   # MFCC, snip_edges
    (lambda n: (n - 400) // 320 + 1, 50.0),    # HuBERT CNN, stride 320, receptive field 400
])
def test_estimate_frame_rate(frames_of, rate):
    samples = [8000, 23566, 33949, 52000, 190800]
    assert estimate_frame_rate([frames_of(n) for n in samples], samples, 16000) == rate
    short = [24000, 24160, 24320, 8800]  # 0.55-1.5 s: frames / seconds alone would say 99 and 48
    assert estimate_frame_rate([frames_of(n) for n in short], short, 16000) == rate
    same = [24000]
    assert estimate_frame_rate([frames_of(n) for n in same], same, 16000) == rate
