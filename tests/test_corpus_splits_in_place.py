"""Real corpora: a corpus's own train / dev / test splits survive import and balancing,
a manifest without speakers is held out by utterance (with a warning), and audio
that is already 16 kHz mono is referenced in place instead of copied."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hubert.balance.splits import BalanceConfig, speaker_warning, split_by_speaker, write_manifests
from hubert.corpus.build import CorpusParams, make_corpus
from hubert.corpus.importers import import_candidates, import_spec
from hubert.corpus.records import Utterance, read_manifest
from hubert.corpus.synthetic import SyntheticConfig
from hubert.labels.features import dump_split
from hubert.labels.params import FeatureConfig
from tests.testdata import LIBRI_CLIP

RATE = 16000
NO_SYNTHETIC = SyntheticConfig(utterances={"en": 0, "zh": 0}, speakers={"en": 0, "zh": 0})


def librispeech(tmp_path: Path, make_wav) -> Path:
    """LibriSpeech/{train-clean-100,dev-clean,test-clean}/<speaker>/<chapter>/*.flac, 3 speakers in train."""
    root = tmp_path / "LibriSpeech"
    for subset, speakers in (("train-clean-100", (19, 26, 32)), ("dev-clean", (84,)), ("test-clean", (61,))):
        for spk in speakers:
            chapter = root / subset / str(spk) / "100"
            for n in range(2):
                make_wav(chapter / f"{spk}-100-000{n}.flac", seconds=1.0)
            (chapter / f"{spk}-100.trans.txt").write_text(
                "".join(f"{spk}-100-000{n} HELLO THERE\n" for n in range(2)), encoding="utf-8")
    return root


def utterances(n: int, lang: str, speaker: str = "", split: str | None = None, prefix: str = "u") -> list[Utterance]:
    return [Utterance(f"{prefix}{lang}{i}", lang, speaker, f"audio/{prefix}{lang}{i}.wav", RATE, "x", split=split)
            for i in range(n)]


# ---------------------------------------------------------------- official splits
def test_librispeech_subsets_map_to_our_splits(tmp_path, make_wav):
    root = librispeech(tmp_path, make_wav)
    spec = import_spec({"format": "librispeech", "root": str(root),
                        "split": {"train-clean-100": "train", "dev-clean": "valid", "test-clean": "test"}})
    got = {c.id: (c.subset, c.split, c.speaker) for c in import_candidates(spec)}
    assert got["19-100-0000"] == ("train-clean-100", "train", "ls19")
    assert got["84-100-0001"] == ("dev-clean", "valid", "ls84") and got["61-100-0000"] == ("test-clean", "test", "ls61")
    one = import_spec({"format": "librispeech", "root": str(root / "dev-clean"), "split": "valid"})
    assert {(c.subset, c.split, c.speaker) for c in import_candidates(one)} == {("dev-clean", "valid", "ls84")}


def test_the_subset_is_the_folder_above_the_speaker_whatever_the_root(tmp_path, make_wav, capsys):
    librispeech(tmp_path, make_wav)
    spec = import_spec({"format": "librispeech", "root": str(tmp_path),  # the folder above LibriSpeech/
                        "split": {"dev-clean": "valid", "test-clean": "test", "dev-other": "valid"}})
    got = {c.id: (c.subset, c.split) for c in import_candidates(spec)}
    assert got["84-100-0000"] == ("dev-clean", "valid") and got["19-100-0000"] == ("train-clean-100", None)
    assert "split names subset(s) ['dev-other'] that it does not have" in capsys.readouterr().err


def test_aishell_dev_and_test_folders_map_to_valid_and_test(tmp_path, make_wav):
    root = tmp_path / "aishell"
    for subset, spk in (("train", "S0002"), ("dev", "S0724"), ("test", "S0764")):
        make_wav(root / "wav" / subset / spk / f"BAC009{spk}W0001.wav")
    (root / "transcript").mkdir()
    (root / "transcript" / "aishell_transcript_v0.8.txt").write_text(
        "".join(f"BAC009{s}W0001 你好\n" for s in ("S0002", "S0724", "S0764")), encoding="utf-8")
    spec = import_spec({"format": "aishell", "root": str(root), "split": {"train": "train", "dev": "valid",
                                                                          "test": "test"}})
    assert {c.id: c.split for c in import_candidates(spec)} == {
        "BAC009S0002W0001": "train", "BAC009S0724W0001": "valid", "BAC009S0764W0001": "test"}


def test_official_splits_are_kept_and_only_the_missing_ones_are_held_out_by_voice():
    en = (utterances(4, "en", "ls19", "train") + utterances(2, "en", "ls84", "valid", "d")
          + utterances(2, "en", "ls61", "test", "t"))
    zh = [u for s in ("a", "b", "c", "d") for u in utterances(2, "zh", f"spk_{s}", None, s)]
    splits = split_by_speaker(en + zh, BalanceConfig(valid_speakers=1, test_speakers=1))
    ids = {name: {u.id for u in rows} for name, rows in splits.items()}
    assert {u.id for u in en if u.split == "valid"} == {i for i in ids["valid"] if i.startswith("den")}
    assert {u.id for u in en if u.split == "test"} == {i for i in ids["test"] if i.startswith("ten")}
    assert {u.id for u in en if u.split == "train"} <= ids["train"]
    for name in ("valid", "test"):  # zh has no split of its own: one voice each, speaker-disjoint
        assert len({u.speaker for u in splits[name] if u.lang == "zh"}) == 1
    zh_speakers = {name: {u.speaker for u in splits[name] if u.lang == "zh"} for name in ("train", "valid", "test")}
    assert not (zh_speakers["train"] & zh_speakers["valid"]) and not (zh_speakers["train"] & zh_speakers["test"])
    # with its own valid and test, a language needs no spare voices: one speaker in train is fine
    assert split_by_speaker(en, BalanceConfig(valid_speakers=5, test_speakers=5))["train"]


def test_too_few_voices_names_the_way_out():
    with pytest.raises(ValueError, match="import the corpus's own valid and test splits"):
        split_by_speaker(utterances(4, "en", "one_voice"), BalanceConfig())


# ---------------------------------------------------------------- no speakers
def test_a_manifest_without_speakers_is_held_out_by_utterance_with_a_warning():
    cfg = BalanceConfig(valid_speakers=1, test_speakers=1, valid_fraction_without_speakers=0.1,
                        test_fraction_without_speakers=0.2)
    utts = utterances(50, "en") + [u for s in "abcd" for u in utterances(3, "zh", f"v{s}", None, s)]
    splits = split_by_speaker(utts, cfg)
    en = {name: [u for u in rows if u.lang == "en"] for name, rows in splits.items()}
    assert (len(en["valid"]), len(en["test"]), len(en["train"])) == (5, 10, 35)  # not 2 "speakers" of one utterance
    assert sorted(u.id for rows in (en["train"], en["valid"], en["test"]) for u in rows) == sorted(
        u.id for u in utts if u.lang == "en")
    assert split_by_speaker(utts, cfg) == splits  # seeded
    warning = speaker_warning(utts, cfg)
    assert "without a speaker (en: 50)" in warning and "valid_fraction_without_speakers" in warning
    assert speaker_warning([u for u in utts if u.lang == "zh"], cfg) is None


def test_a_few_utterances_without_speakers_still_give_valid_and_test_one_each():
    splits = split_by_speaker(utterances(9, "en"), BalanceConfig())  # 5% of 9 rounds to 0
    assert (len(splits["valid"]), len(splits["test"]), len(splits["train"])) == (1, 1, 7)


def test_a_generic_manifest_without_a_speaker_column_gets_unknown_speakers(tmp_path, make_wav):
    root = tmp_path / "m"
    for i in range(3):
        make_wav(root / f"c{i}.wav")
    manifest = root / "m.tsv"
    manifest.write_text("path\ttext\tlang\n" + "".join(f"c{i}.wav\thello\ten\n" for i in range(3)), encoding="utf-8")
    built = make_corpus(CorpusParams(imports=[{"format": "manifest", "root": str(manifest)}], synthetic=NO_SYNTHETIC),
                        tmp_path / "out", progress=False)
    assert [u.speaker for u in built.kept] == ["", "", ""]


# ---------------------------------------------------------------- audio in place
def test_16k_mono_audio_is_referenced_in_place_and_the_rest_converted(tmp_path, make_wav):
    root = librispeech(tmp_path, make_wav)
    make_wav(root / "dev-clean" / "84" / "100" / "84-100-0000.flac", seconds=1.0, rate=22050)  # must be resampled
    chapter = root / "train-clean-100" / "6313" / "76958"
    chapter.mkdir(parents=True)
    shutil.copy(LIBRI_CLIP, chapter / LIBRI_CLIP.name)
    (chapter / "6313-76958.trans.txt").write_text("6313-76958-0021 KEEP A GOIN\n", encoding="utf-8")
    out = tmp_path / "out"
    params = CorpusParams(imports=[{"format": "librispeech", "root": str(root), "copy": False}], synthetic=NO_SYNTHETIC)
    built = make_corpus(params, out, progress=False)
    utts = {u.id: u for u in read_manifest(out / "manifest.jsonl")}
    clip = utts["6313-76958-0021"]
    assert clip.path == str(chapter / LIBRI_CLIP.name) and Path(clip.path).is_absolute()
    assert clip.audio_md5 is not None and clip.num_samples == 190800
    converted = utts["84-100-0000"]
    assert converted.path == "audio/en/ls84/84-100-0000.wav" and converted.audio_md5 is None
    assert (out / converted.path).is_file()
    written = sorted(p.name for p in (out / "audio").rglob("*.wav"))
    assert written == ["84-100-0000.wav"]  # the only file that had to be converted
    assert len(built.kept) == 11  # 5 voices x 2 + the real clip

    # the manifest follows the audio it references: new bytes, new md5, new corpus output
    data, _ = sf.read(chapter / LIBRI_CLIP.name, dtype="float32")
    sf.write(chapter / LIBRI_CLIP.name, data * np.float32(0.5), RATE, format="FLAC")
    make_corpus(params, out, progress=False)
    assert {u.id: u for u in read_manifest(out / "manifest.jsonl")}["6313-76958-0021"].audio_md5 != clip.audio_md5

    # fairseq's manifests and the feature stages read in-place audio as any other
    splits = {"train": list(utts.values()), "valid": [], "test": [], "finetune": []}
    write_manifests(tmp_path / "manifests", out.as_posix(), splits, splits["train"])
    frames = dump_split(tmp_path / "manifests" / "train.tsv", "train", tmp_path / "feats",
                        FeatureConfig(nshard=1, workers=1), RATE, progress=False)
    assert frames[list(utts).index("6313-76958-0021")] == 1191  # the recipe's frame count for this clip


def test_copy_is_the_default(tmp_path, make_wav):
    root = librispeech(tmp_path, make_wav)
    built = make_corpus(CorpusParams(imports=[{"format": "librispeech", "root": str(root / "dev-clean")}],
                                     synthetic=NO_SYNTHETIC), tmp_path / "out", progress=False)
    assert all(not Path(u.path).is_absolute() and u.audio_md5 is None for u in built.kept)
