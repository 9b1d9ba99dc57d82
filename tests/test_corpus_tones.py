"""Mandarin tones in the built-in corpus's phone alignments, and the label-quality
scores of tonal phones beside their toneless inventory."""

from __future__ import annotations

import numpy as np
import pytest

from hubert.corpus.alignments import is_tonal, toneless
from hubert.corpus.build import BuildConfig, alignment_warning, build_corpus
from hubert.corpus.espeak import Espeak
from hubert.corpus.records import Candidate
from hubert.corpus.synthetic import SyntheticConfig, phone_intervals, synthetic_candidates, with_tones
from hubert.labels.layers import flat_scores
from hubert.labels.quality import UttLabels, label_quality
from hubert.pretrain.params import bf16_cpu_warning


@pytest.fixture(scope="module")
def engines():
    return Espeak(), Espeak()


def tonal_vowels(engines, text: str) -> list[str]:
    speaker, translator = engines
    syn = speaker.synthesize(text, "cmn+f2", 150, 50)
    phones = with_tones(syn.phones, translator.phonemes(text, "cmn+f2"))
    assert phones is not None
    return [name.lstrip("',") for name, _ in phones if "/" in name]


def test_the_four_tones_of_ma(engines):
    # 妈 麻 马 骂: mā má mǎ mà
    assert tonal_vowels(engines, "妈麻马骂") == ["A/1", "A/2", "A/3", "A/4"]


def test_a_sentence_with_known_tones(engines):
    # 我们今天去北京吃饭: wǒ men jīn tiān qù běi jīng chī fàn (men: neutral tone, 5)
    vowels = tonal_vowels(engines, "我们今天去北京吃饭")
    assert [v.split("/")[1] for v in vowels] == ["3", "5", "1", "1", "4", "3", "1", "1", "4"]
    assert [toneless(v) for v in vowels] == ["o", "@", "i", "iE", "y", "ei", "i", "i.", "a"]


def test_tone_sandhi_is_what_espeak_spoke(engines):
    # 一 is yī alone but yí before a fourth tone (一个): the reference follows the audio
    assert tonal_vowels(engines, "一个")[0] == "i/2"


def test_third_tone_sandhi_is_applied_as_espeak_speaks_it(engines):
    # espeak writes 你好 as ni214X'Au214 and speaks the first syllable rising (35): tone 2
    assert tonal_vowels(engines, "你好") == ["i/2", "Au/3"]
    # a run of third tones: all but the last become second tones
    assert [v.split("/")[1] for v in tonal_vowels(engines, "我很好")] == ["2", "2", "3"]


def test_sandhi_crosses_syllable_breaks_but_not_pauses():
    events = [("m", 0.0), ("'A", 0.1), ("_|", 0.2), ("m", 0.2), ("'A", 0.3), ("_|", 0.4)]
    assert [n for n, _ in with_tones(events, "m'A214_| m'A214_|")][1::3] == ["'A/2", "'A/3"]
    paused = [("m", 0.0), ("'A", 0.1), ("_:", 0.2), ("m", 0.5), ("'A", 0.6)]
    assert [n for n, _ in with_tones(paused, "m'A214_: m'A214")][1::3] == ["'A/3", "'A/3"]
    # a third tone before another tone keeps its number (espeak speaks it as the half-third 21)
    assert [n for n, _ in with_tones(events, "m'A214_| m'A51_|")][1::3] == ["'A/3", "'A/4"]


def test_a_language_switch_gives_no_alignment():
    # espeak speaks a word it does not know in Mandarin with English phones, between (en) and (cmn)
    events = [("(en)", 0.0), ("n", 0.0), ("'a", 0.1), ("(cmn)", 0.3), ("_|", 0.3)]
    assert with_tones(events, "(en)n'a(cmn)_|") is None


def test_longer_pauses_in_the_string_are_skipped_whole():
    events = [("m", 0.0), ("'A", 0.1), ("m", 0.5), ("'A", 0.6)]
    assert [n for n, _ in with_tones(events, "m'A55_:: m'A51")][1::2] == ["'A/1", "'A/4"]


def test_only_a_final_slash_and_digits_is_a_tone():
    assert toneless("A/3") == "A" and is_tonal("A/3") and is_tonal("iou/11")
    for label in ("a/b", "sil/sp", "A/", "/3", "a/b/c"):
        assert toneless(label) == label and not is_tonal(label)
    assert toneless("a/b/3") == "a/b"
    rate = 50.0
    imported = [UttLabels("en", [["s/z", 0.0, 0.3], ["t", 0.3, 0.6]], np.array([0] * 15 + [1] * 15))]
    assert "toneless" not in label_quality(imported, rate, 2, seed=0)


def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_about():
    assert bf16_cpu_warning("flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile") is None
    assert bf16_cpu_warning("flags : fpu amx_bf16") is None
    warning = bf16_cpu_warning("flags\t\t: fpu sse avx2 avx512f")
    assert "without bf16 instructions" in warning and "precision=fp32" in warning


def test_consonants_codas_and_pauses_keep_their_names(engines):
    speaker, translator = engines
    syn = speaker.synthesize("我们", "cmn", 150, 50)
    phones = with_tones(syn.phones, translator.phonemes("我们", "cmn"))
    names = [a[0] for a in phone_intervals(phones, len(syn.waveform) / syn.sample_rate)]
    assert names[:5] == ["w", "o/3", "m", "@/5", "n"]


def test_a_phoneme_string_of_other_phonemes_gives_no_alignment():
    events = [("m", 0.0), ("'A", 0.1), ("_|", 0.3)]
    assert with_tones(events, "m'A214_|") == [("m", 0.0), ("'A/3", 0.1), ("_|", 0.3)]
    assert with_tones(events, "n'A214_|") is None
    assert with_tones(events, "m'i214_|") is None


def test_an_unknown_contour_is_kept_as_written():
    assert with_tones([("m", 0.0), ("'A", 0.1)], "m'A53")[1] == ("'A/53", 0.1)


def test_translating_in_another_engine_leaves_the_audio_alone():
    alone = Espeak()
    first = [alone.synthesize(t, "cmn+f2", 150, 50).waveform for t in ("你好世界", "我们今天去北京吃饭")]
    speaker, translator = Espeak(), Espeak()
    second = [speaker.synthesize("你好世界", "cmn+f2", 150, 50).waveform]
    translator.phonemes("你好世界", "cmn+f2")
    translator.phonemes("我们今天去北京吃饭", "cmn+f2")
    second.append(speaker.synthesize("我们今天去北京吃饭", "cmn+f2", 150, 50).waveform)
    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(x, y)


def test_synthetic_mandarin_alignments_carry_tones_and_english_none(tmp_path):
    cfg = SyntheticConfig(seed=3, utterances={"en": 2, "zh": 3}, speakers={"en": 1, "zh": 2})
    kept, rejected = build_corpus(synthetic_candidates(cfg), tmp_path / "out", BuildConfig(), progress=False)
    assert not rejected and len(kept) == 5
    for u in kept:
        tonal = [seg[0] for seg in u.alignment if "/" in seg[0]]
        if u.lang == "zh":
            # every syllable of the text has a tonal nucleus (Han characters are one syllable each)
            assert len(tonal) == len(u.text), (u.text, u.alignment)
            assert {t.split("/")[1] for t in tonal} <= {"1", "2", "3", "4", "5"}
        else:
            assert not tonal


def test_an_utterance_whose_tones_cannot_be_placed_is_kept_without_alignment(tmp_path):
    wav = (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    good = Candidate(id="zh_a", lang="zh", speaker="s", source="espeak:cmn", text="妈", waveform=wav,
                     sample_rate=16000, phones=[("m", 0.0), ("'A/1", 0.1)])
    bad = Candidate(id="zh_b", lang="zh", speaker="s", source="espeak:cmn", text="妈", waveform=wav,
                    sample_rate=16000, phones=None, alignment_problem="espeak's phoneme string and its events differ")
    problems = []
    kept, rejected = build_corpus(iter([good, bad]), tmp_path / "out", BuildConfig(), False, problems)
    assert not rejected and [u.id for u in kept] == ["zh_a", "zh_b"]
    assert kept[0].alignment[1][0] == "A/1" and kept[1].alignment is None
    assert [(p.source, p.id) for p in problems] == [("espeak:cmn", "zh_b")]


def test_alignment_warning_names_a_synthetic_problem(tmp_path):
    from hubert.corpus.alignments import AlignmentProblem
    from hubert.corpus.build import Built

    built = Built([], [], [AlignmentProblem("espeak:cmn+f2", "zh_spk000_00001", "the string and events differ")])
    warning = alignment_warning(built, tmp_path)
    assert "espeak:cmn+f2" in warning and "the string and events differ" in warning


def _utts():
    # zh: A/1 and A/2 share unit 0, m is unit 1; en: s is unit 2, t unit 3
    rate = 50.0
    zh = UttLabels("zh", [["A/1", 0.0, 0.2], ["A/2", 0.2, 0.4], ["m", 0.4, 0.6]], np.array([0] * 20 + [1] * 10))
    en = UttLabels("en", [["s", 0.0, 0.3], ["t", 0.3, 0.6]], np.array([2] * 15 + [3] * 15))
    return [zh, en], rate


def test_toneless_scores_beside_tonal_ones():
    utts, rate = _utts()
    got = label_quality(utts, rate, 4, seed=0)
    # the units do not tell tone 1 from tone 2: below 1 with tones, perfect without
    assert got["per_language"]["zh"]["pnmi"] < 0.7
    assert got["toneless"]["per_language"]["zh"]["pnmi"] == pytest.approx(1.0)
    assert got["toneless"]["per_language"]["en"]["pnmi"] == got["per_language"]["en"]["pnmi"]
    assert got["phones"] == 5 and got["toneless"]["phones"] == 4
    stripped = [UttLabels(u.lang, [[toneless(p), s, e] for p, s, e in u.alignment], u.units) for u in utts]
    plain = label_quality(stripped, rate, 4, seed=0)
    assert "toneless" not in plain
    for key in ("pnmi_conditional", "pnmi_prefixed", "phone_purity", "cluster_purity"):
        assert got["toneless"][key] == plain[key]
    assert got["pnmi_conditional"] < got["toneless"]["pnmi_conditional"]


def test_the_layer_sweep_scores_carry_the_toneless_view():
    utts, rate = _utts()
    flat = flat_scores(label_quality(utts, rate, 4, seed=0))
    assert flat["pnmi_zh"] < flat["toneless_pnmi_zh"] == pytest.approx(1.0)
    assert flat["toneless_pnmi_conditional"] > flat["pnmi_conditional"]
