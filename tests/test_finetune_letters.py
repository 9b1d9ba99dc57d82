"""hubert.finetune.letters: fairseq's letter tokens for English and Mandarin, their
inverse, the dictionaries, the label lines and the letters stage on the tiny corpus."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubert.balance.lengths import LengthError, finetune_min_samples
from hubert.finetune import letters
from hubert.finetune.letters import (
    UNK_TEXT,
    dictionary_lines,
    label_lines,
    text_of,
    tokens,
    write_letters,
)
from tests.testdata import non_numeric_leaves

# the tiny profile's limits: finetune.batch.max_tokens, and the shortest its masking (0.75, 10) can draw in
TINY = {"longest": 100000, "shortest": finetune_min_samples(True, 0.75, 10)}
HAN = "\u4e00-\u9fff"
UNKNOWN_HAN = "齉"  # U+9F49: a Han character no tiny transcript uses


# ---------------------------------------------------------------- tokens and text_of
TOKEN_CASES = [
    ("hi there", ["h", "i", "|", "t", "h", "e", "r", "e", "|"]),  # fairseq: "h i | t h e r e |"
    ("我们去", ["我", "们", "去"]),  # Mandarin: no boundary
    ("我们 ok", ["我", "们", "|", "o", "k", "|"]),  # zh -> en: a boundary before the English word
    ("ok 我们", ["o", "k", "|", "我", "们"]),  # en -> zh: the English word's own boundary
    ("don't", ["d", "o", "n", "'", "t", "|"]),
    ("", []),
]


@pytest.mark.parametrize("text, expected", TOKEN_CASES)
def test_tokens_follow_fairseqs_letter_convention(text, expected):
    assert tokens(text) == expected


def test_tokens_ignore_spaces_inside_mandarin():
    assert tokens("我 们") == ["我", "们"]
    assert tokens("   ") == []


@pytest.mark.parametrize("text, symbols", TOKEN_CASES)
def test_text_of_inverts_tokens(text, symbols):
    assert text_of(symbols) == (text, None)


def test_text_of_reads_language_id_and_fairseq_specials():
    assert text_of(["<zh>", "我", "们"]) == ("我们", "zh")
    assert text_of(["<en>", "o", "k", "|"]) == ("ok", "en")
    assert text_of(["<s>", "h", "i", "<pad>", "|", "</s>"]) == ("hi", None)
    assert text_of(["h", "<unk>", "|"]) == ("h" + UNK_TEXT, None)
    assert text_of(["<unk>"]) == (UNK_TEXT, None)


def test_text_of_splits_a_script_switch_without_boundary():
    assert text_of(["o", "k", "我"]) == ("ok 我", None)
    assert text_of(["我", "o", "k"]) == ("我 ok", None)
    assert text_of(["o", "k", "|", "|", "h", "i"]) == ("ok hi", None)  # repeated boundaries: one space


# Normalised transcripts: English words of a-z and apostrophes, runs of Han characters,
# joined by single spaces.
_words = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz'", min_size=1, max_size=8),
    st.text(alphabet="我们去的是中国人一二三十月日", min_size=1, max_size=4),
)


def _without_spaces_between_han(text: str) -> str:
    """The expected round trip, by hand: a space between two Han characters carries nothing."""
    out = []
    for i, ch in enumerate(text):
        if ch == " " and 0 < i < len(text) - 1 and "\u4e00" <= text[i - 1] <= "\u9fff" \
                and "\u4e00" <= text[i + 1] <= "\u9fff":
            continue
        out.append(ch)
    return "".join(out)


@settings(database=None)
@given(st.lists(_words, max_size=8))
def test_text_of_tokens_round_trip(words):
    text = " ".join(words)
    assert text_of(tokens(text)) == (_without_spaces_between_han(text), None)


def test_round_trip_rule_itself():
    assert _without_spaces_between_han("我 们 ok 去 的") == "我们 ok 去的"


# ---------------------------------------------------------------- dictionaries
def test_dictionary_lines_order():
    counts = Counter({"我": 2, "b": 2, "a": 2, "|": 3, "z": 1})
    assert dictionary_lines(counts) == [("|", 3), ("a", 2), ("b", 2), ("我", 2), ("z", 1)]
    assert dictionary_lines(counts, ["zh", "en"]) == [("<en>", 1), ("<zh>", 1), ("|", 3), ("a", 2), ("b", 2),
                                                       ("我", 2), ("z", 1)]


@pytest.mark.parametrize("special", ["<s>", "<pad>", "</s>", "<unk>"])
def test_dictionary_lines_refuse_fairseq_specials(special):
    with pytest.raises(ValueError, match="reserved"):
        dictionary_lines(Counter({"a": 3, special: 1}))


# ---------------------------------------------------------------- label lines
def test_label_lines_unknowns_and_skips():
    vocabulary = {"h", "i", "|", "我", "们"}
    texts = ["hi", "", "hix", "我们", UNKNOWN_HAN * 2, "x y"]
    langs = ["en", "en", "en", "zh", "zh", "en"]
    done = label_lines(texts, langs, vocabulary)
    assert done.keep == [0, 2, 3]
    assert done.ltr == ["h i |", "h i <unk> |", "我 们"]
    assert done.lidltr == ["<en> h i |", "<en> h i <unk> |", "<zh> 我 们"]
    en, zh = done.counts["en"], done.counts["zh"]
    assert (en.utterances, en.kept, en.skipped_empty, en.skipped_unknown_only) == (4, 2, 1, 1)
    assert (zh.utterances, zh.kept, zh.skipped_empty, zh.skipped_unknown_only) == (2, 1, 0, 1)
    kept_only = label_lines(["hix"], ["en"], vocabulary).counts["en"]
    assert kept_only.unk_tokens == 1
    assert kept_only.as_metrics()["unk_rate"] == pytest.approx(0.3333)  # h i <unk>: 1 of 3 characters
    assert label_lines(["hi"], ["en"], vocabulary).counts["en"].as_metrics()["unk_rate"] == 0.0
    assert label_lines([], [], vocabulary).keep == []


# ---------------------------------------------------------------- the letters stage
SPLITS = ("finetune", "valid", "test")
SIDE = ("wrd", "lang", "ltr", "lidltr")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def stage(tiny_manifests, tmp_path_factory):
    out = tmp_path_factory.mktemp("letters") / "letters"
    return out, write_letters(tiny_manifests, out, **TINY)


def test_letters_files_are_line_aligned(stage, tiny_manifests):
    out, metrics = stage
    root = _lines(tiny_manifests / "finetune.tsv")[0]
    for split in SPLITS:
        langs = sorted(set(_lines(tiny_manifests / f"{split}.lang")))
        assert langs == ["en", "zh"]
        for name in [split] + [f"{split}_{lang}" for lang in langs]:
            tsv = _lines(out / f"{name}.tsv")
            assert tsv[0] == root
            n = len(tsv) - 1
            assert n > 0, name
            for ext in SIDE:
                assert len(_lines(out / f"{name}.{ext}")) == n, f"{name}.{ext}"
        for lang in langs:
            assert set(_lines(out / f"{split}_{lang}.lang")) == {lang}
            assert len(_lines(out / f"{split}_{lang}.tsv")) - 1 == metrics["splits"][split][lang]["kept"]
        # lidltr = the language-ID token, then ltr
        for lang, ltr, lidltr in zip(_lines(out / f"{split}.lang"), _lines(out / f"{split}.ltr"),
                                     _lines(out / f"{split}.lidltr")):
            assert lidltr == f"<{lang}> {ltr}"


def test_letters_labels_of_the_finetune_split_by_hand(stage, tiny_manifests):
    out, _ = stage
    for wrd, lang, ltr in zip(_lines(out / "finetune.wrd"), _lines(out / "finetune.lang"),
                              _lines(out / "finetune.ltr")):
        if lang == "en":
            assert ltr == " ".join(wrd.replace(" ", "|")) + " |"  # fairseq's wav2vec letter recipe
        else:
            assert ltr == " ".join(wrd.replace(" ", ""))
    assert _lines(out / "finetune.wrd") == _lines(tiny_manifests / "finetune.wrd")  # nothing skipped
    for split in SPLITS:
        for ltr in _lines(out / f"{split}_zh.ltr"):
            assert re.fullmatch(rf"(?:[{HAN}]|<unk>)(?: (?:[{HAN}]|<unk>))*", ltr), ltr


def test_letters_dictionaries(stage, tiny_manifests):
    out, metrics = stage
    ltr = _lines(out / "dict.ltr.txt")
    symbols = [line.split()[0] for line in ltr]
    counts = [int(line.split()[1]) for line in ltr]
    assert not set(symbols) & {"<s>", "<pad>", "</s>", "<unk>"}
    assert len(symbols) == len(set(symbols))
    text = _lines(tiny_manifests / "finetune.wrd")
    assert set(symbols) == {ch for line in text for ch in line if ch != " "} | {"|"}
    assert counts == sorted(counts, reverse=True)
    en = [w for line, lang in zip(text, _lines(tiny_manifests / "finetune.lang")) if lang == "en"
          for w in line.split()]
    assert counts[symbols.index("|")] == len(en)  # one boundary per English word
    assert _lines(out / "dict.lidltr.txt") == ["<en> 1", "<zh> 1", *ltr]
    assert metrics["vocabulary"]["tokens"] == len(symbols)
    assert not non_numeric_leaves(metrics)


# ---------------------------------------------------------------- bad input
@pytest.fixture
def manifests(tiny_manifests, tmp_path) -> Path:
    copy = tmp_path / "manifests"
    shutil.copytree(tiny_manifests, copy)
    return copy


def _controlled_test_split(manifests: Path) -> tuple[list[str], list[str]]:
    """Rewrite test.wrd with fine-tuning transcripts of the same language (every token known)."""
    ft_text, ft_lang = _lines(manifests / "finetune.wrd"), _lines(manifests / "finetune.lang")
    known = {lang: [t for t, lng in zip(ft_text, ft_lang) if lng == lang] for lang in ("en", "zh")}
    langs = _lines(manifests / "test.lang")
    texts = [known[lang][i % len(known[lang])] for i, lang in enumerate(langs)]
    assert UNKNOWN_HAN not in "".join(ft_text)
    return texts, langs


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def test_empty_finetune_split_is_refused(manifests, tmp_path):
    root = _lines(manifests / "finetune.tsv")[0]
    _write(manifests / "finetune.tsv", [root])
    _write(manifests / "finetune.wrd", [])
    _write(manifests / "finetune.lang", [])
    with pytest.raises(ValueError, match=r"finetune\.tsv[\s\S]*balance\.finetune_fraction"):
        write_letters(manifests, tmp_path / "letters", **TINY)


def test_unknown_only_test_transcript_is_skipped(manifests, tmp_path):
    texts, langs = _controlled_test_split(manifests)
    first_zh = langs.index("zh")
    texts[first_zh] = UNKNOWN_HAN * 2
    _write(manifests / "test.wrd", texts)
    out = tmp_path / "letters"
    metrics = write_letters(manifests, out, **TINY)
    zh, en = metrics["splits"]["test"]["zh"], metrics["splits"]["test"]["en"]
    n_zh = langs.count("zh")
    assert (zh["utterances"], zh["kept"], zh["skipped_unknown_only"], zh["skipped_empty"]) == (n_zh, n_zh - 1, 1, 0)
    assert (en["kept"], en["skipped_unknown_only"], en["unk_tokens"]) == (langs.count("en"), 0, 0)
    assert len(_lines(out / "test.tsv")) - 1 == len(langs) - 1
    for ext in SIDE:
        assert len(_lines(out / f"test.{ext}")) == len(langs) - 1
        assert len(_lines(out / f"test_zh.{ext}")) == n_zh - 1
    dropped = _lines(manifests / "test.tsv")[1 + first_zh]
    assert dropped not in _lines(out / "test.tsv") and dropped not in _lines(out / "test_zh.tsv")
    assert UNKNOWN_HAN * 2 not in _lines(out / "test.wrd")
    assert "<unk>" not in (out / "test.ltr").read_text(encoding="utf-8")


def test_one_unknown_character_is_kept_as_unk(manifests, tmp_path):
    texts, langs = _controlled_test_split(manifests)
    first_zh = langs.index("zh")
    known = texts[first_zh].replace(" ", "")
    texts[first_zh] = known[0] + UNKNOWN_HAN + known[2:]
    _write(manifests / "test.wrd", texts)
    out = tmp_path / "letters"
    metrics = write_letters(manifests, out, **TINY)
    zh = metrics["splits"]["test"]["zh"]
    assert (zh["kept"], zh["skipped_unknown_only"], zh["unk_tokens"]) == (langs.count("zh"), 0, 1)
    assert zh["unk_rate"] == pytest.approx(1 / sum(len(t.replace(" ", "")) for t, lng in zip(texts, langs)
                                                   if lng == "zh"), abs=1e-4)
    ltr = _lines(out / "test_zh.ltr")[0]
    assert ltr == " ".join([known[0], "<unk>", *known[2:]])
    assert _lines(out / "test.ltr")[first_zh] == ltr
    assert _lines(out / "test.lidltr")[first_zh] == "<zh> " + ltr


def test_side_file_shorter_than_manifest_is_refused(manifests, tmp_path):
    _write(manifests / "valid.wrd", _lines(manifests / "valid.wrd")[:-1])
    with pytest.raises(ValueError, match=r"valid\.tsv, \.wrd and \.lang[\s\S]*dvc repro -f balance"):
        write_letters(manifests, tmp_path / "letters", **TINY)


def test_module_constants():
    assert letters.BOUNDARY == "|" and letters.UNK == "<unk>"
    assert letters.lid_token("zh") == "<zh>"


# ---------------------------------------------------------------- lengths
def _set_lengths(manifests: Path, split: str, lengths: dict[int, int]) -> list[str]:
    """Give rows of ``split``.tsv other sample counts; returns the rows as they are now."""
    lines = _lines(manifests / f"{split}.tsv")
    for i, n in lengths.items():
        rel = lines[1 + i].split("\t")[0]
        lines[1 + i] = f"{rel}\t{n}"
    _write(manifests / f"{split}.tsv", lines)
    return lines[1:]


def test_utterances_beyond_finetunings_limits_are_skipped_and_counted(manifests, tmp_path):
    """A fine-tuning utterance longer than max_tokens would stop fairseq; a valid one fairseq drops
    without a word; one shorter than the masking minimum fails its masks. Each is left out and
    counted; test utterances of any length are kept (evaluate decodes them one at a time)."""
    langs = {s: _lines(manifests / f"{s}.lang") for s in SPLITS}
    ft = _set_lengths(manifests, "finetune", {0: 100001, 1: TINY["shortest"] - 1})
    valid = _set_lengths(manifests, "valid", {0: 560000})
    _set_lengths(manifests, "test", {0: 560000, 1: 100})
    out = tmp_path / "letters"
    metrics = write_letters(manifests, out, **TINY)
    count = {s: {k: sum(per[k] for per in metrics["splits"][s].values()) for k in
                 ("utterances", "kept", "skipped_too_long", "skipped_too_short")} for s in SPLITS}
    n = {s: len(langs[s]) for s in SPLITS}
    assert count["finetune"] == {"utterances": n["finetune"], "kept": n["finetune"] - 2, "skipped_too_long": 1,
                                 "skipped_too_short": 1}
    assert metrics["splits"]["finetune"][langs["finetune"][0]]["skipped_too_long"] == 1
    assert count["valid"] == {"utterances": n["valid"], "kept": n["valid"] - 1, "skipped_too_long": 1,
                              "skipped_too_short": 0}
    assert count["test"]["kept"] == n["test"] and len(_lines(out / "test.tsv")) - 1 == n["test"]
    kept = _lines(out / "finetune.tsv")[1:]
    assert ft[0] not in kept and ft[1] not in kept and kept == ft[2:]  # nothing else lost, order kept
    assert valid[0] not in _lines(out / "valid.tsv") and len(_lines(out / "valid.ltr")) == n["valid"] - 1
    for ext in SIDE:
        assert len(_lines(out / f"finetune.{ext}")) == n["finetune"] - 2


def test_utterances_beyond_finetunings_limits_are_refused_under_refuse(manifests, tmp_path):
    _set_lengths(manifests, "finetune", {0: 100001, 1: 250000})
    with pytest.raises(LengthError) as err:
        write_letters(manifests, tmp_path / "letters", **TINY, policy="refuse")
    message = str(err.value)
    assert "2 fine-tuning finetune utterance(s) longer than 100000 samples (6.25 s)" in message
    named = message.split("(6.25 s): ", 1)[1]
    assert named.index("(15.62 s)") < named.index("(6.25 s)")  # the longest first, each with its file
    assert named.startswith(_lines(manifests / "finetune.tsv")[0] + "/")
    assert "finetune.batch.max_tokens" in message and "balance.length_policy=skip" in message
    assert not (tmp_path / "letters").exists()  # refused before anything was written
