"""hubert.corpus (build, synthetic, importers): validation of every bad-input kind through build_corpus, the
LibriSpeech / AISHELL-1 / generic-manifest importers, the seeded synthetic corpus
and its phone alignments, metrics and the nothing-usable failure."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hubert.corpus.audio import CORRUPT_AUDIO, EMPTY_AUDIO, MISSING_AUDIO, NON_FINITE, TOO_SHORT, clipped_samples
from hubert.corpus.build import (
    DUPLICATE_ID,
    EMPTY_TRANSCRIPT,
    MISSING_TRANSCRIPT,
    OUTSIDE_ROOT,
    REASONS,
    UNDECODABLE_TRANSCRIPT,
    UNKNOWN_LANG,
    BuildConfig,
    NothingUsable,
    build_corpus,
    check_usable,
    corpus_metrics,
)
from hubert.corpus.espeak import Espeak, EspeakError
from hubert.corpus.importers import (
    aishell_candidates,
    import_candidates,
    import_spec,
    librispeech_candidates,
    manifest_candidates,
)
from hubert.corpus.records import Rejection, Utterance, read_manifest, write_jsonl
from hubert.corpus.synthetic import (
    PEAK_LIMIT,
    SILENCE,
    SyntheticConfig,
    phone_intervals,
    synthetic_candidates,
    synthetic_speakers,
)
from tests.testdata import LIBRI_CLIP, LIBRI_DIR  # noqa: E402

RATE = 16000
CFG = BuildConfig(sample_rate=RATE, min_seconds=0.5)
LIBRI = LIBRI_DIR
LIBRI_TEXT = ("KEEP A GOIN AND IF YOU'RE LUCKY YOU'LL RUN PLUMB INTO THEM WAS THE JEERING ANSWER AS THE SLEEPY "
              "COWMEN SPURRED THEIR PONIES ON TOWARD CAMP MUTTERING THEIR DISAPPROVAL OF TAKING ALONG A BUNCH OF "
              "BOYS ON A CATTLE DRIVE")


def build(candidates, out):
    return build_corpus(candidates, out, CFG, progress=False)


def by_id(rows):
    return {r.id: r for r in rows}


def assert_written(out: Path, utt: Utterance) -> None:
    """The kept utterance's WAV exists, is 16 kHz mono 16-bit and as long as the manifest says."""
    info = sf.info(str(out / utt.path))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (RATE, 1, "PCM_16", utt.num_samples)
    assert utt.path == f"audio/{utt.lang}/{utt.speaker}/{utt.id}.wav"


# ---------------------------------------------------------------- every bad kind in one batch
@pytest.fixture
def mixed_batch(tmp_path, make_wav):
    """A generic TSV manifest whose rows cover every rejection reason, beside valid rows
    (including a stereo file and two wrong-rate files, which must be fixed and kept)."""
    root = tmp_path / "root"
    make_wav(root / "good_en.wav", seconds=1.0)
    make_wav(root / "good_zh.wav", seconds=1.2)
    make_wav(root / "dup.wav", seconds=1.5)
    make_wav(root / "stereo.wav", seconds=1.0, channels=2)
    make_wav(root / "rate8k.wav", seconds=1.0, rate=8000)
    make_wav(root / "rate44k.flac", seconds=1.0, rate=44100)
    make_wav(root / "notext.wav", seconds=1.0)
    make_wav(root / "emptytext.wav", seconds=1.0)
    make_wav(root / "french.wav", seconds=1.0)
    make_wav(root / "empty.wav", data=np.zeros((0, 1), np.float32))
    make_wav(root / "short.wav", seconds=0.1)
    nan = np.full(RATE, 0.1, np.float32)
    nan[100] = np.nan
    make_wav(root / "nan.wav", data=nan, subtype="FLOAT")
    noise = np.random.default_rng(0)
    (root / "corrupt.wav").write_bytes(noise.bytes(3000))
    (root / "corrupt.flac").write_bytes(noise.bytes(3000))
    outside = make_wav(tmp_path / "outside.wav", seconds=1.0)
    rows = [
        # id, path, text, lang, speaker, expected reason (None = kept)
        ("good_en", "good_en.wav", "Hello there, World", "en", "spk_a", None),
        ("good_zh", "good_zh.wav", "你 好 世界", "zh", "spk_b", None),
        ("stereo", "stereo.wav", "two channels", "en", "spk_a", None),
        ("rate8k", "rate8k.wav", "eight kilohertz", "en", "spk_c", None),
        ("rate44k", "rate44k.flac", "四万四千", "zh", "spk_d", None),
        ("corrupt_wav", "corrupt.wav", "noise", "en", "spk_a", CORRUPT_AUDIO),
        ("corrupt_flac", "corrupt.flac", "noise", "en", "spk_a", CORRUPT_AUDIO),
        ("missing", "missing.wav", "gone", "en", "spk_a", MISSING_AUDIO),
        ("empty", "empty.wav", "nothing", "en", "spk_a", EMPTY_AUDIO),
        ("short", "short.wav", "brief", "en", "spk_a", TOO_SHORT),
        ("nan", "nan.wav", "not a number", "en", "spk_a", NON_FINITE),
        ("notext", "notext.wav", "", "en", "spk_a", MISSING_TRANSCRIPT),
        ("emptytext", "emptytext.wav", "?! ... !!!", "en", "spk_a", EMPTY_TRANSCRIPT),
        ("good_en", "dup.wav", "second copy", "en", "spk_a", DUPLICATE_ID),
        ("outside_rel", "../outside.wav", "escape", "en", "spk_a", OUTSIDE_ROOT),
        ("outside_abs", str(outside), "escape", "en", "spk_a", OUTSIDE_ROOT),
        ("french", "french.wav", "bonjour", "fr", "spk_a", UNKNOWN_LANG),
    ]
    manifest = root / "list.tsv"
    manifest.write_text("id\tpath\ttext\tlang\tspeaker\n"
                        + "".join("\t".join(r[:5]) + "\n" for r in rows), encoding="utf-8")
    return manifest, rows


def test_untranscribed_speech_is_kept_for_pretraining_when_its_import_says_transcripts_optional(mixed_batch,
                                                                                                tmp_path):
    manifest, rows = mixed_batch
    kept, rejected = build(manifest_candidates(manifest), tmp_path / "strict")
    (missing,) = [j for j in rejected if j.reason == MISSING_TRANSCRIPT]
    assert "transcripts: optional" in missing.detail  # the message names the way to keep it
    spec = import_spec({"format": "manifest", "root": str(manifest), "transcripts": "optional"})
    kept, rejected = build(import_candidates(spec), tmp_path / "optional")
    assert by_id(kept)["notext"].text == "" and by_id(kept)["good_en"].text == "hello there world"
    reasons = {j.id: j.reason for j in rejected}
    assert "notext" not in reasons and reasons["emptytext"] == EMPTY_TRANSCRIPT  # text that says nothing: an error
    assert len(kept) == 1 + len([r for r in rows if r[5] is None])
    with pytest.raises(ValueError, match="transcripts 'sometimes' is not required or optional"):
        import_spec({"format": "manifest", "root": str(manifest), "transcripts": "sometimes"})


def test_every_bad_kind_is_rejected_and_nothing_valid_lost(mixed_batch, tmp_path):
    manifest, rows = mixed_batch
    out = tmp_path / "out"
    kept, rejected = build(manifest_candidates(manifest), out)

    assert len(kept) + len(rejected) == len(rows)
    assert [u.id for u in kept] == [r[0] for r in rows if r[5] is None]
    expected = [(r[0], r[5], Path(r[1]).name) for r in rows if r[5] is not None]
    assert [(j.id, j.reason) for j in rejected] == [(i, reason) for i, reason, _ in expected]
    assert {j.reason for j in rejected} == set(REASONS) - {UNDECODABLE_TRANSCRIPT}  # that one: importers below
    for j, (_, _, filename) in zip(rejected, expected):
        assert filename in j.detail, (j.reason, j.detail)  # the message names the offending file
        assert filename in j.source
    for u in kept:
        assert_written(out, u)
    assert not list((out / "audio").rglob("corrupt*")) and not (out / "audio" / "fr").exists()


def test_duplicate_keeps_the_first_and_names_both_files(mixed_batch, tmp_path):
    manifest, _ = mixed_batch
    kept, rejected = build(manifest_candidates(manifest), tmp_path / "out")
    first = by_id(kept)["good_en"]
    assert first.num_samples == RATE and first.text == "hello there world"  # good_en.wav (1 s), not dup.wav (1.5 s)
    dup = [j for j in rejected if j.reason == DUPLICATE_ID]
    assert len(dup) == 1 and "dup.wav" in dup[0].detail and "good_en.wav" in dup[0].detail


def test_multichannel_and_wrong_rate_are_fixed_and_kept(mixed_batch, tmp_path):
    manifest, _ = mixed_batch
    out = tmp_path / "out"
    kept = by_id(build(manifest_candidates(manifest), out)[0])
    for utt_id in ("stereo", "rate8k", "rate44k"):
        assert kept[utt_id].num_samples == RATE  # 1 s at 16 kHz whatever the input rate
        assert_written(out, kept[utt_id])
    stereo, _ = sf.read(str(out / kept["stereo"].path), dtype="float32")
    assert stereo.ndim == 1 and 0.25 < np.abs(stereo).max() < 0.35  # mean of two equal 0.3 channels
    assert kept["good_zh"].text == "你好世界" and kept["rate44k"].text == "四万四千"
    assert kept["good_zh"].speaker == "spk_b" and kept["good_zh"].alignment is None


# ---------------------------------------------------------------- generic manifest importer
def test_generic_tsv_defaults_id_and_marks_the_speaker_unknown(tmp_path, make_wav):
    root = tmp_path / "m"
    make_wav(root / "clips" / "a1.wav")
    make_wav(root / "clips" / "b2.wav")
    manifest = root / "data.tsv"
    manifest.write_text("path\ttext\tlang\nclips/a1.wav\tGood Morning\ten\nclips/b2.wav\t早 上 好\tzh\n",
                        encoding="utf-8")
    kept, rejected = build(manifest_candidates(manifest), tmp_path / "out")
    assert not rejected
    assert [(u.id, u.speaker, u.lang, u.text) for u in kept] == [
        ("a1", "", "en", "good morning"), ("b2", "", "zh", "早上好")]
    assert kept[0].path == "audio/en/unknown_speaker/a1.wav"  # a folder of its own, not "audio/en//"


def test_generic_jsonl(tmp_path, make_wav):
    root = tmp_path / "m"
    make_wav(root / "x.wav", seconds=0.8)
    make_wav(root / "sub" / "y.flac", seconds=1.0, rate=22050)
    manifest = root / "data.jsonl"
    lines = [
        {"id": "x", "path": "x.wav", "text": "我 爱 北京", "lang": "zh", "speaker": "s1"},
        {"path": "sub/y.flac", "text": "It's a Test.", "lang": "en", "speaker": "s2"},
    ]
    manifest.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\n\n", encoding="utf-8")
    kept, rejected = build(manifest_candidates(manifest), tmp_path / "out")
    assert not rejected
    assert [(u.id, u.speaker, u.lang, u.text, u.num_samples) for u in kept] == [
        ("x", "s1", "zh", "我爱北京", 12800), ("y", "s2", "en", "it's a test", RATE)]


def test_generic_jsonl_bad_lines_cost_only_themselves(tmp_path, make_wav):
    root = tmp_path / "m"
    make_wav(root / "a.wav")
    make_wav(root / "b.wav")
    manifest = root / "data.jsonl"
    manifest.write_bytes(b'{"path": "a.wav", "text": "first", "lang": "en"}\n'
                         b'{"path": "a.wav", "text": "\xff\xfe bad", "lang": "en"}\n'
                         b'{"path": "b.wav", "text": oops}\n'
                         b'{"path": "b.wav", "text": "second", "lang": "en"}\n')
    kept, rejected = build(manifest_candidates(manifest), tmp_path / "out")
    assert [u.id for u in kept] == ["a", "b"]
    assert [(j.reason, j.source) for j in rejected] == [
        (UNDECODABLE_TRANSCRIPT, f"{manifest}:2"), (UNDECODABLE_TRANSCRIPT, f"{manifest}:3")]
    assert "not UTF-8" in rejected[0].detail and f"{manifest}:2" in rejected[0].detail
    assert "invalid JSON" in rejected[1].detail and f"{manifest}:3" in rejected[1].detail


def test_generic_ids_cannot_write_outside_the_corpus(tmp_path, make_wav):
    root = tmp_path / "m"
    make_wav(root / "a.wav")
    manifest = root / "data.jsonl"
    rows = [{"id": "../../../../escaped", "path": "a.wav", "text": "up", "lang": "en", "speaker": "s"},
            {"id": "x", "path": "a.wav", "text": "abs", "lang": "en", "speaker": str(tmp_path / "abs")},
            {"id": "book1/utt1", "path": "a.wav", "text": "nested is fine", "lang": "en", "speaker": "s"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    kept, rejected = build(manifest_candidates(manifest), out)
    assert [u.path for u in kept] == ["audio/en/s/book1/utt1.wav"]
    assert [(j.id, j.reason) for j in rejected] == [("../../../../escaped", OUTSIDE_ROOT), ("x", OUTSIDE_ROOT)]
    assert all(str(manifest) in j.detail or "a.wav" in j.detail for j in rejected)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav")) == [
        "m/a.wav", "out/audio/en/s/book1/utt1.wav"]


def test_generic_tsv_undecodable_row(tmp_path, make_wav):
    root = tmp_path / "m"
    make_wav(root / "a.wav")
    make_wav(root / "b.wav")
    manifest = root / "data.tsv"
    manifest.write_bytes(b"path\ttext\tlang\na.wav\t\xe4\xbd bad\tzh\nb.wav\t\xe5\xa5\xbd\tzh\n")
    kept, rejected = build(manifest_candidates(manifest), tmp_path / "out")
    assert [(u.id, u.text) for u in kept] == [("b", "好")]
    assert [j.reason for j in rejected] == [UNDECODABLE_TRANSCRIPT]
    assert f"{manifest}:2" in rejected[0].detail


def test_generic_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        list(manifest_candidates(tmp_path / "nope.tsv"))
    headerless = tmp_path / "h.tsv"
    headerless.write_text("a.wav\thello\ten\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header"):
        list(manifest_candidates(headerless))
    csv = tmp_path / "m.csv"
    csv.write_text("path,text,lang\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown manifest type"):
        list(manifest_candidates(csv))


# ---------------------------------------------------------------- LibriSpeech importer
@pytest.fixture
def librispeech_root(tmp_path, make_wav):
    """The real clip in its LibriSpeech place, plus a synthetic chapter whose transcript
    has one undecodable line and lacks one utterance."""
    root = tmp_path / "LibriSpeech" / "train-clean-100"
    chapter = root / "6313" / "76958"
    chapter.mkdir(parents=True)
    shutil.copy(LIBRI_CLIP, chapter / "6313-76958-0021.flac")
    (chapter / "6313-76958.trans.txt").write_text(f"6313-76958-0021 {LIBRI_TEXT}\n", encoding="utf-8")
    other = root / "19" / "198"
    for n in range(4):
        make_wav(other / f"19-198-000{n}.flac", seconds=0.8 + 0.1 * n)
    (other / "19-198.trans.txt").write_bytes(b"19-198-0000 NORTHANGER ABBEY\n"
                                             b"19-198-0001 CATHERINE \xff\xfe MORLAND\n"
                                             b"19-198-0002 NO ONE WHO HAD EVER SEEN\n")
    return root


def test_librispeech_real_clip(librispeech_root, tmp_path):
    out = tmp_path / "out"
    kept, rejected = build(librispeech_candidates(librispeech_root), out)
    utt = by_id(kept)["6313-76958-0021"]
    assert utt.num_samples == 190800 and utt.lang == "en" and utt.speaker == "ls6313"
    assert utt.text == LIBRI_TEXT.lower() and utt.text.startswith("keep a goin and if you're lucky")
    assert_written(out, utt)
    # Already 16 kHz mono 16-bit: the samples pass through untouched.
    original, _ = sf.read(str(LIBRI_CLIP), dtype="int16")
    written, _ = sf.read(str(out / utt.path), dtype="int16")
    np.testing.assert_array_equal(written, original)


def test_librispeech_bad_transcript_lines_cost_only_their_utterance(librispeech_root, tmp_path):
    kept, rejected = build(librispeech_candidates(librispeech_root), tmp_path / "out")
    assert sorted(u.id for u in kept) == ["19-198-0000", "19-198-0002", "6313-76958-0021"]
    assert by_id(kept)["19-198-0000"].text == "northanger abbey" and by_id(kept)["19-198-0000"].speaker == "ls19"
    reasons = {j.id: j for j in rejected}
    assert set(reasons) == {"19-198-0001", "19-198-0003"}
    bad = reasons["19-198-0001"]
    assert bad.reason == UNDECODABLE_TRANSCRIPT
    assert "19-198.trans.txt:2" in bad.detail and "UTF-8" in bad.detail
    missing = reasons["19-198-0003"]
    assert missing.reason == MISSING_TRANSCRIPT and "19-198-0003.flac" in missing.detail


def test_librispeech_symlink_out_of_the_root_is_rejected(tmp_path, make_wav):
    root = tmp_path / "ls"
    make_wav(root / "19" / "198" / "19-198-0000.flac")
    outside = make_wav(tmp_path / "elsewhere" / "19-198-0001.flac")
    (root / "19" / "198" / "19-198-0001.flac").symlink_to(outside)
    (root / "19" / "198" / "19-198.trans.txt").write_text("19-198-0000 A\n19-198-0001 B\n", encoding="utf-8")
    kept, rejected = build(librispeech_candidates(root), tmp_path / "out")
    assert [u.id for u in kept] == ["19-198-0000"]
    assert [(j.id, j.reason) for j in rejected] == [("19-198-0001", OUTSIDE_ROOT)]
    assert "19-198-0001.flac" in rejected[0].detail


def test_librispeech_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="LibriSpeech root"):
        list(librispeech_candidates(tmp_path / "nope"))


# ---------------------------------------------------------------- AISHELL-1 importer
@pytest.fixture
def aishell_root(tmp_path, make_wav):
    root = tmp_path / "aishell"
    make_wav(root / "wav" / "train" / "S0002" / "BAC009S0002W0122.wav", seconds=1.0)
    make_wav(root / "wav" / "train" / "S0002" / "BAC009S0002W0123.wav", seconds=1.0)
    make_wav(root / "wav" / "dev" / "S0724" / "BAC009S0724W0121.wav", seconds=0.9, rate=44100)
    make_wav(root / "wav" / "test" / "S0764" / "BAC009S0764W0121.wav", seconds=1.0)
    transcript = root / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.parent.mkdir(parents=True)
    transcript.write_bytes("BAC009S0002W0122 而 对 楼市 成交 抑制 作用 最 大 的 限 购\n".encode()
                           + b"BAC009S0002W0123 \xe4\xbd \xe5\xa5\xbd\n"
                           + "BAC009S0724W0121 甚至 出现 交易 几乎 停滞 的 情况\n".encode()
                           + b"BAC009S0764W0121 hello OK\n")
    return root


def test_aishell_importer(aishell_root, tmp_path):
    out = tmp_path / "out"
    kept, rejected = build(import_candidates(import_spec({"format": "aishell", "root": str(aishell_root)})), out)
    assert [(u.id, u.lang, u.speaker, u.text, u.num_samples) for u in kept] == [
        ("BAC009S0724W0121", "zh", "aiS0724", "甚至出现交易几乎停滞的情况", 14400),
        ("BAC009S0002W0122", "zh", "aiS0002", "而对楼市成交抑制作用最大的限购", RATE),
    ]
    for u in kept:
        assert_written(out, u)
    reasons = by_id(rejected)
    assert {i: j.reason for i, j in reasons.items()} == {
        "BAC009S0002W0123": UNDECODABLE_TRANSCRIPT, "BAC009S0764W0121": EMPTY_TRANSCRIPT}
    assert "aishell_transcript_v0.8.txt:2" in reasons["BAC009S0002W0123"].detail
    assert "BAC009S0764W0121.wav" in reasons["BAC009S0764W0121"].detail


def test_aishell_missing_transcript_file(aishell_root):
    with pytest.raises(FileNotFoundError, match="other.txt"):
        list(aishell_candidates(aishell_root, "other.txt"))
    with pytest.raises(FileNotFoundError, match="AISHELL root"):
        list(aishell_candidates(aishell_root / "nope", "t.txt"))


@pytest.mark.parametrize("spec, message", [
    ({"format": "timit", "root": "/x"}, "format must be one of"),
    ({"format": "librispeech"}, "root is required"),
    ({"format": "librispeech", "root": "/x", "splits": "train"}, "unknown key"),
    ({"format": "librispeech", "root": "/x", "split": "dev"}, "split 'dev' is not one of"),
    ({"format": "aishell", "root": "/x", "split": {"dev": "validation"}}, "split 'validation' is not one of"),
])
def test_import_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        import_spec(spec)


# ---------------------------------------------------------------- synthetic corpus
SMALL = SyntheticConfig(seed=0, utterances={"en": 3, "zh": 3}, speakers={"en": 2, "zh": 2})


def test_synthetic_corpus_is_deterministic_from_seed(tmp_path):
    first = list(synthetic_candidates(SMALL))
    second = list(synthetic_candidates(SMALL))
    assert [c.id for c in first] == ["en_spk000_00000", "en_spk001_00001", "en_spk000_00002",
                                     "zh_spk000_00000", "zh_spk001_00001", "zh_spk000_00002"]
    for a, b in zip(first, second, strict=True):
        assert (a.id, a.text, a.voice, a.speaker, a.sample_rate, a.phones) == (b.id, b.text, b.voice, b.speaker,
                                                                               b.sample_rate, b.phones)
        np.testing.assert_array_equal(a.waveform, b.waveform)
    kept_a, _ = build(iter(first), tmp_path / "a")
    kept_b, _ = build(iter(second), tmp_path / "b")
    assert [u.alignment for u in kept_a] == [u.alignment for u in kept_b]

    other = list(synthetic_candidates(SyntheticConfig(seed=1, utterances=SMALL.utterances,
                                                          speakers=SMALL.speakers)))
    assert [c.text for c in other] != [c.text for c in first]
    assert [c.voice for c in other] != [c.voice for c in first]


def test_synthetic_corpus_texts_and_alignments(tmp_path):
    kept, rejected = build(synthetic_candidates(SMALL), tmp_path / "out")
    assert not rejected and len(kept) == 6
    for u in kept:
        if u.lang == "zh":
            assert re.fullmatch(r"[\u4e00-\u9fff]+", u.text), u.text
        else:
            assert re.fullmatch(r"[a-z']+( [a-z']+)*", u.text), u.text
        assert u.voice and u.voice.startswith("cmn+" if u.lang == "zh" else "en")
        duration = u.num_samples / RATE
        assert duration >= CFG.min_seconds
        align = u.alignment
        assert len(align) >= 5
        assert align[0][1] == 0.0
        assert abs(align[-1][2] - duration) <= 1e-3
        for (name, start, end), nxt in zip(align, align[1:] + [None]):
            assert isinstance(name, str) and name and not name.startswith(("'", ",", "_"))
            assert end > start
            if nxt is not None:
                assert nxt[1] == end  # contiguous
                assert nxt[0] != name  # equal neighbours are merged
        assert any(name != SILENCE for name, _, _ in align)
        assert_written(tmp_path / "out", u)


def test_synthetic_speakers(tmp_path):
    cfg = SyntheticConfig(seed=3, speakers={"en": 5, "zh": 4}, rate_wpm=(140, 160), pitch=(30, 40))
    speakers = synthetic_speakers(cfg)
    assert speakers == synthetic_speakers(cfg)
    assert [s.id for s in speakers] == [f"en_spk{k:03d}" for k in range(5)] + [f"zh_spk{k:03d}" for k in range(4)]
    assert len({s.voice for s in speakers}) == 9
    assert all(140 <= s.rate <= 160 and 30 <= s.pitch <= 40 for s in speakers)
    assert all(s.voice.startswith("cmn+") for s in speakers if s.lang == "zh")


@pytest.mark.parametrize("cfg, message", [
    (SyntheticConfig(speakers={"en": 1, "zh": 1000}), "exceeds the"),
    (SyntheticConfig(utterances={"en": 1, "fr": 1}, speakers={"en": 1, "zh": 1}), "unknown language"),
    (SyntheticConfig(utterances={"en": 1, "zh": 1}, speakers={"en": 1, "zh": 0}), "speakers.zh must be > 0"),
])
def test_synthetic_config_errors(cfg, message):
    with pytest.raises(ValueError, match=message):
        list(synthetic_candidates(cfg))


def test_synthetic_extra_text(tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("en\tThe Purple Walrus sings\nzh\t紫色 海象 唱歌\n", encoding="utf-8")
    cfg = SyntheticConfig(seed=0, utterances={"en": 2, "zh": 2}, speakers={"en": 1, "zh": 1},
                            extra_text=str(extra), extra_share=1.0)
    assert [c.text for c in synthetic_candidates(cfg)] == ["the purple walrus sings"] * 2 + ["紫色海象唱歌"] * 2


def test_espeak_engine():
    engine = Espeak()
    syn = engine.synthesize("hello world", "en-us", 170, 50)
    assert syn.sample_rate == engine.sample_rate > 0
    assert syn.waveform.dtype == np.float32 and len(syn.waveform) > 0.3 * syn.sample_rate
    assert np.abs(syn.waveform).max() <= 1.0 and np.abs(syn.waveform).max() > 0.01
    starts = [t for _, t in syn.phones]
    assert len(syn.phones) >= 6 and starts == sorted(starts)
    zh = engine.synthesize("你好世界", "cmn", 170, 50)
    assert len(zh.waveform) > 0 and zh.phones
    with pytest.raises(EspeakError, match="no voice"):
        engine.synthesize("hello", "xx-nonexistent", 170, 50)


def test_espeak_repeats_itself_whatever_the_clock_and_history():
    # cmn+f2 is a breathy voice: its noise generator is seeded at initialisation;
    # en-us+m1 exercises the wavegen state (pitch flutter) that persists between utterances.
    first = Espeak()
    a = [first.synthesize(t, v, 150, 50).waveform for t, v in (("你好世界", "cmn+f2"), ("hello there", "en-us+m1"))]
    first.synthesize("something else entirely", "en-us+m3", 200, 70)
    time.sleep(1.05)  # espeak_Initialize would otherwise seed from time(NULL), in whole seconds
    second = Espeak()
    b = [second.synthesize(t, v, 150, 50).waveform for t, v in (("你好世界", "cmn+f2"), ("hello there", "en-us+m1"))]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- alignment
def test_phone_intervals_hand_built():
    events = [("h", 0.0), ("'E", 0.1), (",E", 0.2), ("_:", 0.3), ("l", 0.3), ("oU", 0.5), ("_", 0.7)]
    assert phone_intervals(events, 0.8) == [
        ["h", 0.0, 0.1], ["E", 0.1, 0.3], ["l", 0.3, 0.5], ["oU", 0.5, 0.7], ["sil", 0.7, 0.8]]


def test_phone_intervals_leading_silence_and_clamping():
    assert phone_intervals([("a", 0.2), ("b", 0.5), ("c", 0.9)], 0.6) == [
        ["sil", 0.0, 0.2], ["a", 0.2, 0.5], ["b", 0.5, 0.6]]
    assert phone_intervals([], 0.4) == [["sil", 0.0, 0.4]]


# ---------------------------------------------------------------- records, metrics, failure
def test_manifest_round_trip(tmp_path):
    utts = [Utterance("a", "zh", "s", "audio/zh/s/a.wav", 16000, "你好", "cmn+f1", [["n", 0.0, 0.5]]),
            Utterance("b", "en", "t", "audio/en/t/b.wav", 8000, "hi")]
    path = tmp_path / "m" / "manifest.jsonl"
    write_jsonl(path, (u.to_dict() for u in utts))
    assert "你好" in path.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes
    assert read_manifest(path) == utts
    # a manifest written before clipped_samples existed still reads
    old = {k: v for k, v in utts[0].to_dict().items() if k != "clipped_samples"}
    assert Utterance.from_dict(old) == utts[0]


def test_corpus_metrics_hand_computed():
    kept = [Utterance("a", "en", "s1", "p", 3600 * 16000, "x"),
            Utterance("b", "en", "s2", "p", 1800 * 16000, "x", alignment=[["sil", 0.0, 1.0]]),
            Utterance("c", "zh", "s3", "p", 900 * 16000, "好")]
    rejected = [Rejection("d", "d.wav", TOO_SHORT, "d.wav: short"),
                Rejection("e", "e.wav", TOO_SHORT, "e.wav: short"),
                Rejection("f", "f.wav", DUPLICATE_ID, "f.wav: dup")]
    m = corpus_metrics(kept, rejected, 16000)
    assert m["utterances"] == {"en": 2, "zh": 1, "total": 3}
    assert m["hours"]["en"] == pytest.approx(1.5) and m["hours"]["zh"] == pytest.approx(0.25)
    assert m["hours"]["total"] == pytest.approx(1.75)
    assert m["speakers"] == {"en": 2, "zh": 1} and m["aligned_utterances"] == 1
    assert m["rejected"]["too_short"] == 2 and m["rejected"]["duplicate_id"] == 1 and m["rejected"]["total"] == 3
    assert set(m["rejected"]) == set(REASONS) | {"total"}


def test_check_usable(tmp_path):
    utt = Utterance("a", "en", "s", "p", 16000, "x")
    rej = [Rejection("b", "b.wav", CORRUPT_AUDIO, "b.wav: bad"),
           Rejection("c", "c.wav", CORRUPT_AUDIO, "c.wav: bad"),
           Rejection("d", "d.wav", UNKNOWN_LANG, "d.wav: fr")]
    check_usable([utt], rej, tmp_path / "rejected.jsonl")  # something kept: no error
    with pytest.raises(NothingUsable, match="corpus is empty"):
        check_usable([], [], tmp_path / "rejected.jsonl")
    with pytest.raises(NothingUsable) as err:
        check_usable([], rej, tmp_path / "rejected.jsonl")
    message = str(err.value)
    assert "all 3 utterances" in message and "corrupt_audio: 2" in message and "unknown_lang: 1" in message
    assert str(tmp_path / "rejected.jsonl") in message


def test_synthetic_noise_floor_is_seeded_and_at_the_asked_level():
    small = dict(seed=2, utterances={"en": 1, "zh": 1}, speakers={"en": 1, "zh": 1})
    clean = list(synthetic_candidates(SyntheticConfig(**small, noise_dbfs=None)))
    noisy = list(synthetic_candidates(SyntheticConfig(**small, noise_dbfs=-40.0)))
    for c, n in zip(clean, noisy, strict=True):
        assert np.any(c.waveform == 0.0)  # espeak's pauses are digital zeros
        assert not np.any(n.waveform == 0.0)
        residual = n.waveform - c.waveform  # the same engine history, so the speech cancels exactly
        np.testing.assert_allclose(np.sqrt(np.mean(residual ** 2)), 10 ** (-40 / 20), rtol=0.05)
        assert np.abs(c.waveform).max() < 1.0  # no clipping at espeak's volume


def test_manifest_jsonl_line_that_is_not_an_object_is_rejected_with_its_line(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    good = root / "good.wav"
    import numpy as np
    import soundfile as sf
    sf.write(str(good), np.zeros(16000, np.float32) + 0.01, 16000)
    manifest = root / "list.jsonl"
    manifest.write_text('{"path": "good.wav", "text": "hello", "lang": "en"}\n[1, 2, 3]\n', encoding="utf-8")
    kept, rejected = build_corpus(manifest_candidates(manifest), tmp_path / "out", BuildConfig(), progress=False)
    assert [u.id for u in kept] == ["good"]
    assert [r.reason for r in rejected] == [UNDECODABLE_TRANSCRIPT]
    assert "list.jsonl:2" in rejected[0].detail and "JSON object" in rejected[0].detail


def test_transcript_file_with_tab_after_the_id(tmp_path):
    from hubert.corpus.importers import read_transcripts
    path = tmp_path / "t.txt"
    path.write_bytes(b"A1\thello world\nA2 second line\n")
    assert read_transcripts(path) == {"A1": ("hello world", None), "A2": ("second line", None)}


def test_synthetic_too_loud_is_said_again_quieter_not_clipped():
    # espeak at volume 200 saturates its 16-bit output for ordinary voices too
    small = dict(seed=2, utterances={"en": 2, "zh": 2}, speakers={"en": 2, "zh": 2})
    engine = Espeak()
    loud = [engine.synthesize(c.text, c.source.removeprefix("espeak:"), 170, 50, volume=200).waveform
            for c in synthetic_candidates(SyntheticConfig(**small, noise_dbfs=None))]
    assert max(np.abs(w).max() for w in loud) > PEAK_LIMIT  # the case is real
    cands = list(synthetic_candidates(SyntheticConfig(**small, noise_dbfs=None, volume=200)))
    assert all(np.abs(c.waveform).max() <= PEAK_LIMIT for c in cands)
    assert all(np.abs(c.waveform).max() > 0.25 for c in cands)  # quieter, not silent
    again = list(synthetic_candidates(SyntheticConfig(**small, noise_dbfs=None, volume=200)))
    for a, b in zip(cands, again, strict=True):
        np.testing.assert_array_equal(a.waveform, b.waveform)


def test_clipped_samples_counts_full_scale():
    wav = np.array([0.0, 0.5, 32767 / 32768, -1.0, 1.3, -0.99], dtype=np.float32)
    assert clipped_samples(wav) == 3
