"""hubert.evaluate.scoring: greedy CTC, zh / en / code-switched tokenisation, edit-error counts,
pooled corpus rates, (paired) bootstrap intervals and the constant-output floor, against answers
computed by hand."""

from __future__ import annotations

import math

import jiwer
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubert.evaluate import scoring
from hubert.evaluate.scoring import (
    Errors,
    best_constant_output,
    bootstrap_interval,
    char_tokens,
    corpus_rate,
    edit_errors,
    greedy_ctc,
    is_han,
    mixed_tokens,
    most_frequent_tokens,
    paired_bootstrap,
    utterance_errors,
)


def logits(best: list[int], vocab: int = 6) -> np.ndarray:
    """A (T, vocab) matrix whose frame t peaks at best[t]."""
    x = np.full((len(best), vocab), -1.0)
    x[np.arange(len(best)), best] = 2.0
    return x


def levenshtein(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


# ---------------------------------------------------------------- greedy CTC
def test_greedy_ctc_hand_made():
    frames = [0, 3, 3, 0, 3, 5, 5, 0]
    # repeats merged (3 3 -> 3, 5 5 -> 5), but the blank between the two 3s keeps both
    assert greedy_ctc(logits(frames)) == [3, 3, 5]
    assert greedy_ctc(logits(frames), blank=5) == [0, 3, 0, 3, 0]  # merged 0 3 0 3 5 0, then 5 dropped
    assert greedy_ctc(logits([3, 3, 3])) == [3]
    assert greedy_ctc(logits([0, 0, 0])) == []
    assert greedy_ctc(np.zeros((0, 6))) == []
    assert greedy_ctc(logits(frames).tolist()) == [3, 3, 5]  # anything np.asarray takes
    with pytest.raises(ValueError, match="T, V"):
        greedy_ctc(np.zeros(6))


@settings(database=None, max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2)), max_size=12))
def test_greedy_ctc_inverts_an_encoding(spans):
    # each label held for `hold` frames, followed by `pad` blanks; one blank forced between equal labels
    labels, frames = [], []
    for label, hold, pad in spans:
        if labels and labels[-1] == label and frames[-1] != 0:
            frames.append(0)
        labels.append(label)
        frames += [label] * hold + [0] * pad
    assert greedy_ctc(logits(frames)) == labels


# ---------------------------------------------------------------- tokenisation
def test_is_han():
    assert is_han("我") and is_han("\u3400") and is_han("\uf900")
    assert not is_han("a") and not is_han("。") and not is_han(" ") and not is_han("1")


def test_mixed_tokens():
    assert mixed_tokens("我们 hello world 吃饭") == ["我", "们", "hello", "world", "吃", "饭"]
    assert mixed_tokens("ok我们") == ["ok", "我", "们"]
    assert mixed_tokens("我们ok吃") == ["我", "们", "ok", "吃"]
    assert mixed_tokens("  don't\tstop  ") == ["don't", "stop"]
    assert mixed_tokens("") == [] and mixed_tokens("   ") == []


def test_char_tokens():
    assert char_tokens("我 们\t去 ", keep_spaces=False) == ["我", "们", "去"]
    assert char_tokens("  the  cat ", keep_spaces=True) == list("the cat")
    assert char_tokens("  the  cat ", keep_spaces=False) == list("thecat")


# ---------------------------------------------------------------- error counts
def test_errors_arithmetic():
    e = Errors(sub=1, dele=2, ins=3, ref=10)
    assert e.errors == 6 and e.rate == pytest.approx(0.6)
    assert e + Errors(sub=1, ref=5) == Errors(2, 2, 3, 15)
    assert math.isnan(Errors(ins=2).rate)
    with pytest.raises(AttributeError):
        e.sub = 0  # frozen: shared Errors must not be changed in place


def test_edit_errors_known_cases():
    assert edit_errors("a b c".split(), "a x c d".split()) == Errors(sub=1, dele=0, ins=1, ref=3)
    assert edit_errors(["a", "b"], []) == Errors(dele=2, ref=2)
    assert edit_errors([], ["a", "b", "c"]) == Errors(ins=3, ref=0)
    assert edit_errors([], []) == Errors()
    assert edit_errors(["a", "b"], ["a", "b"]) == Errors(ref=2)
    # a space is a token of its own (en cer), and tokens are compared verbatim (no case folding)
    assert edit_errors(list("a b"), list("ab")) == Errors(dele=1, ref=3)
    assert edit_errors(["A"], ["a"]) == Errors(sub=1, ref=1)


@settings(database=None, max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", " ", "A", "x y", "我"]), max_size=8),
       st.lists(st.sampled_from(["a", "b", " ", "A", "x y", "我"]), max_size=8))
def test_edit_errors_is_the_levenshtein_distance(ref, hyp):
    e = edit_errors(ref, hyp)
    assert e.errors == levenshtein(ref, hyp)
    assert e.ref == len(ref) and e.sub + e.dele <= len(ref)
    assert len(hyp) == len(ref) - e.dele + e.ins


def test_utterance_errors_zh():
    e = utterance_errors("我们去北京", "我们去南京", "zh")
    assert set(e) == {"cer", "mer"}
    assert e["cer"] == Errors(sub=1, ref=5) and e["cer"].rate == pytest.approx(1 / 5)
    assert e["mer"].rate == pytest.approx(1 / 5)
    # whitespace means nothing in Mandarin text
    assert utterance_errors("我们 去 北京", "我们去 南京", "zh")["cer"] == Errors(sub=1, ref=5)


def test_utterance_errors_en():
    e = utterance_errors("the cat sat", "the bat sat", "en")
    assert set(e) == {"wer", "cer", "mer"}
    assert e["wer"].rate == pytest.approx(1 / 3)
    assert e["cer"] == Errors(sub=1, ref=11) and e["cer"].rate == pytest.approx(1 / 11)
    assert e["mer"].rate == pytest.approx(1 / 3)
    # whitespace collapsed and stripped before counting characters: still 11, and spaces are characters
    assert utterance_errors("  the  cat sat ", "the bat sat", "en")["cer"] == Errors(sub=1, ref=11)
    assert utterance_errors("the cat", "thecat", "en")["cer"] == Errors(dele=1, ref=7)


def test_utterance_errors_mix():
    e = utterance_errors("我们 hello world 吃饭", "我们 hello word 吃饭", "mix")
    assert set(e) == {"mer", "cer"}
    assert e["mer"] == Errors(sub=1, ref=6)  # one English word wrong among 4 characters + 2 words
    assert e["cer"] == Errors(dele=1, ref=14)  # "我们helloworld吃饭" loses its "l"


def test_mer_is_the_mixed_error_rate_not_jiwers_match_error_rate():
    e = utterance_errors("a", "a b c", "en")["mer"]
    assert e.rate == pytest.approx(2.0)  # two insertions over one reference word: can exceed 1
    assert jiwer.mer("a", "a b c") == pytest.approx(2 / 3)


def test_utterance_errors_unknown_lang():
    with pytest.raises(ValueError, match="lang"):
        utterance_errors("a", "a", "fr")


def test_corpus_rate_pools_instead_of_averaging():
    errs = [Errors(sub=1, ref=2), Errors(ref=8)]
    assert corpus_rate(errs) == pytest.approx(1 / 10)
    assert np.mean([e.rate for e in errs]) == pytest.approx(0.25)  # what averaging would have said
    assert math.isnan(corpus_rate([])) and math.isnan(corpus_rate([Errors(ins=1)]))


# ---------------------------------------------------------------- bootstrap
def varied(n: int) -> list[Errors]:
    return [Errors(sub=k % 4, dele=k % 3 == 0, ins=k % 5 == 0, ref=5 + k % 7) for k in range(n)]


def test_bootstrap_collapses_when_every_utterance_has_the_same_rate():
    errs = [Errors(sub=1, ref=4), Errors(sub=1, dele=1, ref=8), Errors(ins=3, ref=12)] * 5
    assert bootstrap_interval(errs, replicates=200) == (0.25, 0.25)


def test_bootstrap_contains_the_estimate_and_is_seeded():
    errs = varied(60)
    low, high = bootstrap_interval(errs, replicates=500, seed=1)
    assert low < corpus_rate(errs) < high
    assert bootstrap_interval(errs, replicates=500, seed=1) == (low, high)
    assert bootstrap_interval(errs, replicates=500, seed=2) != (low, high)
    wide = bootstrap_interval(errs, replicates=500, seed=1, level=0.99)
    assert wide[0] <= low and high <= wide[1]


def test_bootstrap_narrows_with_more_utterances():
    small = bootstrap_interval(varied(20), replicates=300)
    large = bootstrap_interval(varied(2000), replicates=300)
    # the width goes as 1/sqrt(n): 10x narrower for 100x the utterances
    assert large[1] - large[0] < (small[1] - small[0]) / 4


def test_bootstrap_drops_replicates_without_reference_tokens():
    low, high = bootstrap_interval([Errors(ins=1), Errors(sub=1, ref=2)], replicates=200)
    # replicates: both second (2/4), one of each (2/2); both first has no rate and is dropped
    assert 0.5 <= low <= high <= 1.0
    assert all(math.isnan(x) for x in bootstrap_interval([], replicates=10))


def test_bootstrap_index_chunks_cover_all_replicates():
    chunks = list(scoring._index_chunks(7, 10, seed=0, max_elements=21))
    assert [c.shape for c in chunks] == [(3, 7), (3, 7), (3, 7), (1, 7)]
    assert all(c.min() >= 0 and c.max() < 7 for c in chunks)
    # 1000 x 10000 is drawn a bounded number of rows at a time
    assert max(len(c) for c in scoring._index_chunks(10_000, 1000, seed=0)) * 10_000 <= scoring._CHUNK_ELEMENTS


@pytest.mark.parametrize("kwargs", [{"replicates": 0}, {"level": 1.0}, {"level": 0.0}])
def test_bootstrap_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bootstrap_interval(varied(5), **kwargs)
    with pytest.raises(ValueError):
        paired_bootstrap(varied(5), varied(5), **kwargs)


def test_paired_bootstrap_identical_systems():
    errs = varied(40)
    out = paired_bootstrap(errs, errs, replicates=300)
    assert out == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_a_not_better": 1.0}


def test_paired_bootstrap_better_system():
    b = [Errors(sub=1 + k % 5, ref=10) for k in range(30)]
    a = [Errors(sub=k % 5, ref=10) for k in range(30)]  # one error fewer on every utterance
    out = paired_bootstrap(a, b, replicates=300)
    assert out["difference"] == pytest.approx(-0.1)
    # the same indices for a and b: every replicate's difference is exactly -0.1, though each
    # system's own rate varies a lot from replicate to replicate
    assert out["low"] == pytest.approx(-0.1) and out["high"] == pytest.approx(-0.1)
    assert out["high"] < 0 and out["p_a_not_better"] == 0.0
    assert paired_bootstrap(b, a, replicates=300)["p_a_not_better"] == 1.0


def test_paired_bootstrap_needs_aligned_utterances():
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(varied(5), varied(6))
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap([Errors(ref=3)], [Errors(ref=4)])


# ---------------------------------------------------------------- calibration floors
def test_most_frequent_tokens_breaks_ties_alphabetically():
    texts = ["b a", "c d", "a c"]  # a 2, c 2, b 1, d 1
    assert most_frequent_tokens(texts, "en", 2) == "a c"
    assert most_frequent_tokens(texts[::-1], "en", 3) == "a c b"
    assert most_frequent_tokens(texts, "en", 10) == "a c b d"
    assert most_frequent_tokens(texts, "en", 0) == ""
    # 北 2, 京 2, 南 1; 京 (U+4EAC) sorts before 北 (U+5317); characters are concatenated
    assert most_frequent_tokens(["北京 北", "京南"], "zh", 2) == "京北"
    assert most_frequent_tokens(["京南", "北京 北"], "zh", 3) == "京北南"


def test_best_constant_output_empty_when_nothing_overlaps():
    # n=0: 3 deletions / 3 words = 1.0; n=1 "x": 1 sub + 1 del, then 1 sub = 1.0 (tie keeps ""); n=2: 4/3
    assert best_constant_output(["x y z"], ["a b", "c"], "en", "wer") == ("", 1.0)
    assert best_constant_output(["the cat", "the dog", "the"], ["the", "the end"], "en", "wer", max_n=0) == ("", 1.0)


def test_best_constant_output_picks_the_best_n():
    # n=1 "the": 0 errors, then 1 deletion -> 1/3; n=0 gives 3/3 and n=2 "the cat" 2/3
    out, rate = best_constant_output(["the cat", "the dog", "the"], ["the", "the end"], "en", "wer")
    assert out == "the" and rate == pytest.approx(1 / 3)
    assert best_constant_output(["好好的"], ["好"], "zh", "cer") == ("好", 0.0)
    with pytest.raises(ValueError, match="metric"):
        best_constant_output(["好"], ["好"], "zh", "wer")
