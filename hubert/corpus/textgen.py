"""Built-in bilingual text generator over one controlled vocabulary per language.

Every sentence is a template filled from small closed word lists (numbers,
dates, times, everyday phrases), so transcripts of held-out voices are covered
by the training transcripts: the out-of-vocabulary rate of test against
fine-tuning text stays near zero and is reported, not assumed.

Transcripts are normalised as fairseq users label them: English lower-case
words separated by single spaces, Mandarin Han characters with no spaces or
punctuation. Spoken text and transcript are the same string, so espeak reads
exactly what the label says (numbers are spelled out, never digits).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LANGS = ("en", "zh")

_EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    " seventeen eighteen nineteen"
).split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_EN_ORD = {
    1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh", 8: "eighth",
    9: "ninth", 10: "tenth", 11: "eleventh", 12: "twelfth", 13: "thirteenth", 14: "fourteenth",
    15: "fifteenth", 16: "sixteenth", 17: "seventeenth", 18: "eighteenth", 19: "nineteenth", 20: "twentieth",
    30: "thirtieth",
}
_EN_MONTHS = "january february march april may june july august september october november december".split()
_EN_DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_EN_SUBJECTS = ["i", "we", "you", "they", "my sister", "my brother", "the teacher", "our neighbour", "the doctor",
                "his friend"]
_EN_VERBS = ["wanted to buy", "would like", "needed", "found", "lost", "cleaned", "carried", "ordered", "forgot",
             "painted"]
_EN_OBJECTS = ["a red apple", "the green bag", "some warm bread", "two cups of tea", "a new phone", "the old map",
               "a small table", "three blue pens", "the heavy box", "a fresh orange"]
_EN_PLACES = ["at the station", "in the kitchen", "near the river", "at school", "in the park", "at the market",
              "on the train", "in the office", "at home", "by the window"]
_EN_WHEN = ["this morning", "last night", "every day", "on the weekend", "after lunch", "before dinner",
            "tomorrow", "yesterday", "right now", "next week"]

_ZH_DIGITS = "零一二三四五六七八九"
_ZH_DAYS = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期天"]
_ZH_SUBJECTS = ["我", "我们", "你", "他们", "我姐姐", "我哥哥", "老师", "邻居", "医生", "他的朋友"]
_ZH_VERBS = ["想买", "需要", "找到了", "丢了", "洗了", "拿着", "点了", "忘了", "带来", "喜欢"]
_ZH_OBJECTS = ["一个红苹果", "绿色的包", "一些面包", "两杯茶", "新手机", "旧地图", "一张小桌子", "三支蓝笔", "重箱子",
               "一个橙子"]
_ZH_PLACES = ["在车站", "在厨房", "在河边", "在学校", "在公园", "在市场", "在火车上", "在办公室", "在家里",
              "在窗户旁边"]
_ZH_PERIODS = [("早上", range(6, 12)), ("下午", range(1, 6)), ("晚上", range(6, 12))]

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def en_number(n: int) -> str:
    """Spell 0 <= n < 10000 in English words (no 'and', as espeak reads)."""
    if not 0 <= n < 10000:
        raise ValueError(f"en_number supports 0..9999, got {n}")
    if n < 20:
        return _EN_ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _EN_TENS[tens] + ("" if ones == 0 else " " + _EN_ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _EN_ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + en_number(rest))
    thousands, rest = divmod(n, 1000)
    return _EN_ONES[thousands] + " thousand" + ("" if rest == 0 else " " + en_number(rest))


def en_ordinal(n: int) -> str:
    """Spell an ordinal day of the month, 1..31."""
    if n in _EN_ORD:
        return _EN_ORD[n]
    tens, ones = divmod(n, 10)
    return _EN_TENS[tens] + " " + _EN_ORD[ones]


def zh_number(n: int) -> str:
    """Write 0 <= n < 10000 in Han numerals as spoken (十二, 一百零五, 二千零五)."""
    if not 0 <= n < 10000:
        raise ValueError(f"zh_number supports 0..9999, got {n}")
    if n < 10:
        return _ZH_DIGITS[n]
    if n < 20:
        return "十" + ("" if n == 10 else _ZH_DIGITS[n - 10])
    out, zero = "", False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = (n // value) % 10
        if digit == 0:
            zero = bool(out)
            continue
        if zero:
            out += "零"
            zero = False
        out += _ZH_DIGITS[digit] + unit
    return out


@dataclass(frozen=True)
class Sentence:
    lang: str
    text: str


def _en_sentence(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)} {rng.choice(_EN_PLACES)}"
    if kind == 1:
        return f"{rng.choice(_EN_DAYS)} the {en_ordinal(rng.randint(1, 28))} of {rng.choice(_EN_MONTHS)}"
    if kind == 2:
        minute = rng.choice([0, 5, 10, 15, 20, 30, 40, 45, 50])
        clock = en_number(rng.randint(1, 12)) + (" o'clock" if minute == 0 else " " + en_number(minute))
        return (f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)}"
                f" at {clock} {rng.choice(_EN_WHEN)}")
    return (f"{rng.choice(_EN_SUBJECTS)} counted {en_number(rng.randint(2, 9999))}"
            f" {rng.choice(['cars', 'birds', 'coins', 'books'])} {rng.choice(_EN_PLACES)}")


def _zh_sentence(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return f"{rng.choice(_ZH_SUBJECTS)}{rng.choice(_ZH_PLACES)}{rng.choice(_ZH_VERBS)}{rng.choice(_ZH_OBJECTS)}"
    if kind == 1:
        return f"{zh_number(rng.randint(1, 12))}月{zh_number(rng.randint(1, 28))}日{rng.choice(_ZH_DAYS)}"
    if kind == 2:
        period, hours = rng.choice(_ZH_PERIODS)
        minute = rng.choice([0, 5, 10, 15, 20, 30, 40, 45, 50])
        clock = f"{zh_number(rng.choice(list(hours)))}点" + ("整" if minute == 0 else f"{zh_number(minute)}分")
        return (f"{rng.choice(['今天', '明天', '昨天'])}{period}{clock}"
                f"{rng.choice(_ZH_SUBJECTS)}{rng.choice(_ZH_VERBS)}{rng.choice(_ZH_OBJECTS)}")
    return (f"{rng.choice(_ZH_SUBJECTS)}{rng.choice(_ZH_PLACES)}数了{zh_number(rng.randint(2, 9999))}"
            f"{rng.choice(['辆车', '只鸟', '个硬币', '本书'])}")


_GENERATORS = {"en": _en_sentence, "zh": _zh_sentence}


_EN_ORDINAL_NUM = re.compile(r"(?<![0-9])([0-9]{1,2})(st|nd|rd|th)(?![a-z])")
_ZH_YEAR = re.compile(r"[0-9]+(?=年)")
_DIGITS = re.compile(r"[0-9]+")


def _spell_digits(text: str, spell: Callable[[int], str], sep: str) -> str:
    """Digit runs as words: up to 4 digits (no leading zero) as a number, longer ones digit by digit."""
    def one(match: re.Match) -> str:
        run = match.group(0)
        if len(run) <= 4 and (run == "0" or run[0] != "0"):
            return sep + spell(int(run)) + sep
        return sep + sep.join(spell(int(d)) for d in run) + sep
    return _DIGITS.sub(one, text)


def normalize(lang: str, text: str) -> str:
    """Normalise a transcript the way labels are written; raise on an unknown language.

    en: lower-case words of a-z and apostrophes; accents are dropped (café -> cafe);
    numbers are spelt out (3 -> three, 21st -> twenty first, 1990 -> one thousand
    nine hundred ninety, longer runs and leading zeros digit by digit).
    zh: Han characters only; numbers in Han numerals (12 -> 十二, a year before 年
    and longer runs digit by digit: 2024年 -> 二零二四年).
    Anything else (punctuation, other scripts) is dropped.
    """
    if lang == "en":
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
        text = _EN_ORDINAL_NUM.sub(
            lambda m: f" {en_ordinal(int(m.group(1)))} " if 1 <= int(m.group(1)) <= 31 else m.group(0), text)
        text = _spell_digits(text, en_number, " ")
        return " ".join(re.findall(r"[a-z']+", text))
    if lang == "zh":
        text = unicodedata.normalize("NFKC", text)  # full-width digits (１２) -> ASCII
        text = _ZH_YEAR.sub(lambda m: "".join(zh_number(int(d)) for d in m.group(0)), text)
        text = _spell_digits(text, zh_number, "")
        return "".join(_HAN.findall(text))
    raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")


def read_extra_text(path: str | Path) -> list[Sentence]:
    """Read a user text file: one ``lang<TAB>sentence`` per line (# starts a comment).

    Lines in another language or that normalise to nothing are an error naming
    the line, since silently dropping a user's sentences hides a typo.
    """
    try:
        content = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from exc
    out = []
    for lineno, line in enumerate(content.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lang, sep, text = line.partition("\t")
        lang = lang.strip()
        if not sep or lang not in LANGS:
            raise ValueError(f"{path}:{lineno}: expected 'en<TAB>text' or 'zh<TAB>text', got {line!r}")
        norm = normalize(lang, text)
        if not norm:
            raise ValueError(f"{path}:{lineno}: no {lang} words left after normalisation in {text!r}")
        out.append(Sentence(lang, norm))
    return out


class TextGenerator:
    """Deterministic sentence source per language: templates plus optional user sentences."""

    def __init__(self, seed: int, extra: list[Sentence] | None = None, extra_share: float = 0.2) -> None:
        self._rng = random.Random(seed)
        self._extra = {lang: [s.text for s in (extra or []) if s.lang == lang] for lang in LANGS}
        self._extra_share = extra_share

    def sentence(self, lang: str) -> str:
        if lang not in _GENERATORS:
            raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
        if self._extra[lang] and self._rng.random() < self._extra_share:
            return self._rng.choice(self._extra[lang])
        return normalize(lang, _GENERATORS[lang](self._rng))
