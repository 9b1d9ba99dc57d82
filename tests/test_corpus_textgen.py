"""hubert.corpus.textgen: number spelling, normalisation, the seeded sentence source and
the user's extra-text file."""

from __future__ import annotations

import re

import pytest

from hubert.corpus.textgen import (
    LANGS,
    Sentence,
    TextGenerator,
    en_number,
    en_ordinal,
    normalize,
    read_extra_text,
    zh_number,
)

EN_TEXT = re.compile(r"[a-z']+( [a-z']+)*")
ZH_TEXT = re.compile(r"[\u4e00-\u9fff]+")


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (42, "forty two"), (100, "one hundred"),
    (115, "one hundred fifteen"), (990, "nine hundred ninety"), (1000, "one thousand"),
    (2005, "two thousand five"), (3040, "three thousand forty"), (9999, "nine thousand nine hundred ninety nine"),
])
def test_en_number(n, words):
    assert en_number(n) == words


@pytest.mark.parametrize("n, words", [
    (1, "first"), (3, "third"), (12, "twelfth"), (20, "twentieth"), (21, "twenty first"), (22, "twenty second"),
    (28, "twenty eighth"), (30, "thirtieth"), (31, "thirty first"),
])
def test_en_ordinal(n, words):
    assert en_ordinal(n) == words


@pytest.mark.parametrize("n, han", [
    (0, "零"), (5, "五"), (10, "十"), (12, "十二"), (20, "二十"), (45, "四十五"), (100, "一百"), (105, "一百零五"),
    (110, "一百一十"), (999, "九百九十九"), (1001, "一千零一"), (1010, "一千零一十"), (2005, "二千零五"),
    (3050, "三千零五十"), (9999, "九千九百九十九"),
])
def test_zh_number(n, han):
    assert zh_number(n) == han


@pytest.mark.parametrize("fn", [en_number, zh_number])
@pytest.mark.parametrize("n", [-1, 10000])
def test_numbers_out_of_range_raise(fn, n):
    with pytest.raises(ValueError, match=str(n)):
        fn(n)


def test_normalize():
    assert normalize("en", "Hello,  World! It's   FINE.") == "hello world it's fine"
    assert normalize("zh", "你 好，世界！ abc") == "你好世界"  # Latin words in zh are dropped
    assert normalize("en", "!! ...") == ""


@pytest.mark.parametrize("lang, text, expected", [
    ("en", "3 cats", "three cats"),  # numbers are words, not dropped
    ("en", "On the 21st, 20th and 3rd of May", "on the twenty first twentieth and third of may"),
    ("en", "Room 101 at 10:30", "room one hundred one at ten thirty"),
    ("en", "call 0042 or 123456", "call zero zero four two or one two three four five six"),
    ("en", "Café NAÏVE résumé", "cafe naive resume"),  # accents dropped, letters kept
    ("en", "the 99th time", "the ninety nine th time"),  # ordinals only for days of the month
    ("zh", "我有3只猫", "我有三只猫"),
    ("zh", "１２月２５日", "十二月二十五日"),  # full-width digits
    ("zh", "2024年有105天", "二零二四年有一百零五天"),  # years digit by digit
    ("zh", "电话13800", "电话一三八零零"),
])
def test_normalize_spells_numbers_and_keeps_accented_words(lang, text, expected):
    assert normalize(lang, text) == expected
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        normalize("fr", "bonjour")


def test_generator_is_deterministic_from_seed():
    def draw(seed):
        gen = TextGenerator(seed)
        return [gen.sentence(lang) for _ in range(15) for lang in LANGS]

    assert draw(4) == draw(4)
    assert draw(4) != draw(5)


def test_generated_sentences_are_normalised_labels():
    gen = TextGenerator(0)
    for _ in range(150):
        en, zh = gen.sentence("en"), gen.sentence("zh")
        assert EN_TEXT.fullmatch(en), en  # lower-case words, numbers spelled out, single spaces
        assert ZH_TEXT.fullmatch(zh), zh  # Han characters only: no digits, spaces or punctuation
        assert normalize("en", en) == en and normalize("zh", zh) == zh


def test_generator_rejects_unknown_language():
    with pytest.raises(ValueError, match="unknown language 'de'"):
        TextGenerator(0).sentence("de")


def test_generator_draws_extra_sentences():
    extra = [Sentence("en", "the purple walrus sings"), Sentence("zh", "紫色海象唱歌")]
    always = TextGenerator(0, extra, extra_share=1.0)
    assert {always.sentence("en") for _ in range(5)} == {"the purple walrus sings"}
    assert {always.sentence("zh") for _ in range(5)} == {"紫色海象唱歌"}
    never = TextGenerator(0, extra, extra_share=0.0)
    assert "the purple walrus sings" not in {never.sentence("en") for _ in range(50)}
    some = TextGenerator(0, extra, extra_share=0.5)
    drawn = [some.sentence("en") for _ in range(200)]
    assert 0.3 < drawn.count("the purple walrus sings") / len(drawn) < 0.7


def test_read_extra_text_good_file(tmp_path):
    path = tmp_path / "extra.txt"
    path.write_text("# my sentences\n\nen\tHello, World!\nzh\t你 好，世界。\n  \nen\tIt's   OK\n", encoding="utf-8")
    assert read_extra_text(path) == [Sentence("en", "hello world"), Sentence("zh", "你好世界"),
                                     Sentence("en", "it's ok")]


@pytest.mark.parametrize("bad_line, message", [
    ("no tab here", "expected 'en<TAB>text'"),
    ("fr\tbonjour", "expected 'en<TAB>text'"),
    ("zh\tonly latin letters", "no zh words"),
    ("en\t!! ?? --", "no en words"),
])
def test_read_extra_text_bad_line_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "extra.txt"
    path.write_text(f"en\tgood one\n# comment\n{bad_line}\nzh\t好的\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        read_extra_text(path)
    assert f"{path}:3" in str(err.value)


def test_read_extra_text_undecodable_names_file(tmp_path):
    path = tmp_path / "extra.txt"
    path.write_bytes(b"en\tgood one\nzh\t\xff\xfe\n")
    with pytest.raises(ValueError, match="not UTF-8") as err:
        read_extra_text(path)
    assert str(path) in str(err.value)
