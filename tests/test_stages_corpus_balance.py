"""stages/corpus.py and stages/balance.py end to end on the tiny profile (shared
session fixtures from conftest.py), plus imports-only runs and the stage-level failure."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from hubert.balance.splits import SPLITS
from hubert.corpus.build import REASONS, NothingUsable
from hubert.corpus.records import read_manifest
from stages import balance as balance_stage
from stages import corpus as corpus_stage

RATE = 16000
from tests.testdata import LIBRI_CLIP, non_numeric_leaves  # noqa: E402

pytestmark = pytest.mark.slow


def read_split(manifests: Path, split: str) -> tuple[str, list[tuple[str, int]], list[str], list[str]]:
    tsv = (manifests / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    rows = [(p, int(n)) for p, n in (line.split("\t") for line in tsv[1:])]
    langs = (manifests / f"{split}.lang").read_text(encoding="utf-8").splitlines()
    words = (manifests / f"{split}.wrd").read_text(encoding="utf-8").splitlines()
    return tsv[0], rows, langs, words


# ---------------------------------------------------------------- corpus stage, tiny profile
def test_corpus_outputs(tiny_params, tiny_corpus, tiny_metrics):
    synth = yaml.safe_load(tiny_params.read_text())["corpus"]["synthetic"]
    utts = read_manifest(tiny_corpus / "manifest.jsonl")
    assert (tiny_corpus / "rejected.jsonl").is_file()
    assert Counter(u.lang for u in utts) == synth["utterances"]
    assert {lang: len({u.speaker for u in utts if u.lang == lang}) for lang in ("en", "zh")} == synth["speakers"]
    assert len({u.id for u in utts}) == len(utts)
    wavs = sorted(p.relative_to(tiny_corpus).as_posix() for p in (tiny_corpus / "audio").rglob("*.wav"))
    assert wavs == sorted(u.path for u in utts)  # no stray audio, none missing
    for u in utts:
        info = sf.info(str(tiny_corpus / u.path))
        assert (info.samplerate, info.channels, info.frames) == (RATE, 1, u.num_samples)
        assert u.alignment and u.voice and u.text


def test_corpus_metrics(tiny_corpus, tiny_metrics):
    metrics = json.loads((tiny_metrics / "corpus.json").read_text())
    assert not non_numeric_leaves(metrics)
    utts = read_manifest(tiny_corpus / "manifest.jsonl")
    rejected = (tiny_corpus / "rejected.jsonl").read_text().splitlines()
    for lang in ("en", "zh"):
        assert metrics["utterances"][lang] == sum(u.lang == lang for u in utts)
        hours = sum(u.num_samples for u in utts if u.lang == lang) / RATE / 3600
        assert metrics["hours"][lang] == pytest.approx(hours, abs=1e-4)
    assert metrics["utterances"]["total"] == len(utts)
    assert set(metrics["rejected"]) == set(REASONS) | {"total"}
    # the synthesiser's saturating voices are said again quieter: nothing clipped, and the count is real
    assert metrics["clipped"] == {"utterances": 0, "samples": 0}
    for u in utts:
        wav, _ = sf.read(str(tiny_corpus / u.path), dtype="float32")
        assert u.clipped_samples == 0 and np.abs(wav).max() < 32767 / 32768
    assert metrics["rejected"]["total"] == len(rejected) == sum(v for k, v in metrics["rejected"].items()
                                                                 if k != "total")


def test_corpus_stage_is_byte_identical_when_run_again(tiny_params, tiny_corpus, tmp_path):
    out = tmp_path / "corpus"
    (out / "audio" / "stale").mkdir(parents=True)
    (out / "audio" / "stale" / "old.wav").write_bytes(b"stale")  # an earlier run's leftovers go
    corpus_stage.main(["--params", str(tiny_params), "--out", str(out), "--metrics", str(tmp_path / "m.json")])
    assert (out / "manifest.jsonl").read_bytes() == (tiny_corpus / "manifest.jsonl").read_bytes()
    first = sorted(p.relative_to(tiny_corpus) for p in tiny_corpus.rglob("*.wav"))
    second = sorted(p.relative_to(out) for p in out.rglob("*.wav"))
    assert first == second
    for rel in first:
        assert (out / rel).read_bytes() == (tiny_corpus / rel).read_bytes(), rel


# ---------------------------------------------------------------- balance stage, tiny profile
def test_manifests_line_aligned_with_root_first(tiny_corpus, tiny_manifests):
    by_path = {u.path: u for u in read_manifest(tiny_corpus / "manifest.jsonl")}
    for split in SPLITS:
        root, rows, langs, words = read_split(tiny_manifests, split)
        assert root == tiny_corpus.as_posix()
        assert rows and len(rows) == len(langs) == len(words)
        for (path, n), lang, text in zip(rows, langs, words):
            u = by_path[path]
            assert (n, lang, text) == (u.num_samples, u.lang, u.text)
            assert (Path(root) / path).is_file()


def test_manifest_splits_are_speaker_disjoint(tiny_corpus, tiny_manifests, tiny_params):
    by_path = {u.path: u for u in read_manifest(tiny_corpus / "manifest.jsonl")}
    speakers = {s: {by_path[p].speaker for p, _ in read_split(tiny_manifests, s)[1]} for s in SPLITS}
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    assert not speakers["finetune"] & (speakers["valid"] | speakers["test"])
    cfg = yaml.safe_load(tiny_params.read_text())["balance"]
    for lang in ("en", "zh"):
        assert len({s for s in speakers["test"] if s.startswith(lang)}) == cfg["test_speakers"]
        assert len({s for s in speakers["valid"] if s.startswith(lang)}) == cfg["valid_speakers"]


def test_balance_metrics(tiny_corpus, tiny_manifests, tiny_metrics, tiny_params):
    metrics = json.loads((tiny_metrics / "balance.json").read_text())
    assert not non_numeric_leaves(metrics)
    for split in SPLITS:
        _, rows, langs, _ = read_split(tiny_manifests, split)
        if split == "train":
            continue  # train.tsv is the balanced list: its hours are pretrain.hours_after
        for lang in ("en", "zh"):
            hours = sum(n for (_, n), tag in zip(rows, langs) if tag == lang) / RATE / 3600
            assert metrics["hours"][split][lang] == pytest.approx(hours, abs=1e-4)
    _, rows, langs, _ = read_split(tiny_manifests, "train")
    pre = metrics["pretrain"]
    assert pre["utterances"] == len(rows)
    for lang in ("en", "zh"):
        after = sum(n for (_, n), tag in zip(rows, langs) if tag == lang) / RATE / 3600
        assert pre["hours_after"][lang] == pytest.approx(after, abs=1e-4)
        assert pre["hours_before"][lang] == pytest.approx(metrics["hours"]["train"][lang], abs=1e-4)
    for key in ("proportion_natural", "proportion_target", "proportion_effective"):
        assert sum(pre[key].values()) == pytest.approx(1.0, abs=1e-3)
    alpha = yaml.safe_load(tiny_params.read_text())["balance"]["alpha"]
    if alpha < 1:  # sampling moves the shares from natural towards uniform
        gap = {lang: abs(pre["proportion_natural"][lang] - 0.5) for lang in ("en", "zh")}
        assert all(abs(pre["proportion_target"][lang] - 0.5) <= gap[lang] + 1e-9 for lang in gap)
    for lang, p in pre["proportion_effective"].items():
        assert p == pytest.approx(pre["proportion_target"][lang], abs=0.05)
    assert set(metrics["oov_rate_test_vs_finetune"]) == {"en", "zh"}


def test_balance_stage_too_few_speakers(tiny_corpus, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"corpus": {"sample_rate": RATE},
                                      "balance": {"valid_speakers": 5, "test_speakers": 5}}))
    with pytest.raises(ValueError, match="speakers but balance.valid_speakers"):
        balance_stage.main(["--params", str(params), "--corpus", str(tiny_corpus), "--out", str(tmp_path / "m"),
                            "--metrics", str(tmp_path / "b.json")])


def test_balance_stage_rejects_unknown_param(tiny_corpus, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"corpus": {"sample_rate": RATE}, "balance": {"alhpa": 0.5}}))
    with pytest.raises(ValueError, match="unknown key.*balance: alhpa"):
        balance_stage.main(["--params", str(params), "--corpus", str(tiny_corpus), "--out", str(tmp_path / "m"),
                            "--metrics", str(tmp_path / "b.json")])


# ---------------------------------------------------------------- imports only, and nothing usable
def imports_params(tmp_path: Path, imports: list[dict]) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"corpus": {
        "imports": imports, "sample_rate": RATE, "min_seconds": 0.5,
        "synthetic": {"utterances": {"en": 0, "zh": 0}, "speakers": {"en": 0, "zh": 0}}}}))
    return params


def test_corpus_stage_imports_only(tmp_path, make_wav):
    libri = tmp_path / "LibriSpeech"
    (libri / "6313" / "76958").mkdir(parents=True)
    shutil.copy(LIBRI_CLIP, libri / "6313" / "76958" / LIBRI_CLIP.name)
    (libri / "6313" / "76958" / "6313-76958.trans.txt").write_text("6313-76958-0021 KEEP A GOIN\n")
    make_wav(tmp_path / "gen" / "a.wav", rate=44100, channels=2)
    (tmp_path / "gen" / "list.tsv").write_text("path\ttext\tlang\na.wav\t你 好\tzh\nmissing.wav\thi\ten\n")
    params = imports_params(tmp_path, [{"format": "librispeech", "root": str(libri)},
                                       {"format": "manifest", "root": str(tmp_path / "gen" / "list.tsv")}])
    out, metrics_path = tmp_path / "corpus", tmp_path / "metrics" / "corpus.json"
    metrics = corpus_stage.main(["--params", str(params), "--out", str(out), "--metrics", str(metrics_path)])
    utts = read_manifest(out / "manifest.jsonl")
    assert [(u.id, u.lang, u.num_samples, u.text) for u in utts] == [
        ("6313-76958-0021", "en", 190800, "keep a goin"), ("a", "zh", RATE, "你好")]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [("missing", "missing_audio")]
    assert json.loads(metrics_path.read_text()) == metrics
    assert metrics["rejected"]["missing_audio"] == 1 and metrics["aligned_utterances"] == 0


def test_corpus_stage_nothing_usable(tmp_path, make_wav):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "noise.wav").write_bytes(b"\x00\x01garbage" * 100)
    make_wav(root / "short.wav", seconds=0.1)
    (root / "list.tsv").write_text("path\ttext\tlang\nnoise.wav\thello\ten\nshort.wav\thi\ten\n"
                                   "nowhere.wav\thi\ten\nshort.wav\thi\tfr\n")
    params = imports_params(tmp_path, [{"format": "manifest", "root": str(root / "list.tsv")}])
    out, metrics_path = tmp_path / "corpus", tmp_path / "metrics" / "corpus.json"
    with pytest.raises(NothingUsable) as err:
        corpus_stage.main(["--params", str(params), "--out", str(out), "--metrics", str(metrics_path)])
    message = str(err.value)
    assert "all 4 utterances were rejected" in message
    for reason in ("corrupt_audio: 1", "too_short: 1", "missing_audio: 1", "unknown_lang: 1"):
        assert reason in message
    assert str(out / "rejected.jsonl") in message
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["corrupt_audio", "too_short", "missing_audio", "unknown_lang"]
    assert all(r["detail"] for r in rejected)
    assert (out / "manifest.jsonl").read_text() == ""
    assert json.loads(metrics_path.read_text())["rejected"]["total"] == 4


def test_corpus_stage_rejects_bad_import_spec(tmp_path):
    params = imports_params(tmp_path, [{"format": "timit", "root": "/x"}])
    with pytest.raises(ValueError, match="format must be one of"):
        corpus_stage.main(["--params", str(params), "--out", str(tmp_path / "c"), "--metrics", str(tmp_path / "m")])


def test_corpus_stage_keeps_clipped_audio_and_names_it(tmp_path, make_wav, capsys):
    root = tmp_path / "gen"
    t = np.arange(RATE) / RATE
    loud = np.clip(1.6 * np.sin(2 * np.pi * 220.0 * t), -1.0, 1.0).astype(np.float32)  # a clipped recording
    make_wav(root / "loud.wav", data=loud)
    make_wav(root / "fine.wav")
    (root / "list.tsv").write_text("path\ttext\tlang\nloud.wav\thello\ten\nfine.wav\thi\ten\n")
    params = imports_params(tmp_path, [{"format": "manifest", "root": str(root / "list.tsv")}])
    out = tmp_path / "corpus"
    metrics = corpus_stage.main(["--params", str(params), "--out", str(out), "--metrics", str(tmp_path / "m.json")])
    utts = {u.id: u for u in read_manifest(out / "manifest.jsonl")}
    assert set(utts) == {"loud", "fine"}  # kept: clipping is a warning, not a rejection
    expected = int(np.count_nonzero(np.abs(loud) >= 32767 / 32768))
    assert expected > 1000 and utts["loud"].clipped_samples == expected and utts["fine"].clipped_samples == 0
    assert metrics["clipped"] == {"utterances": 1, "samples": expected}
    err = capsys.readouterr().err
    assert "1 utterance(s)" in err and "worst: loud" in err and "headroom" in err and str(out / "manifest.jsonl") in err
