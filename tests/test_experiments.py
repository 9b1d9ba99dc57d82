"""The headline view of `dvc exp show` (hubert.experiments) on a hand-made `--json` answer."""

from __future__ import annotations

from hubert.experiments import headline, markdown, rows


def entry(rev, name, alpha, cer):
    return {"rev": rev, "name": name, "data": {
        "params": {"params.yaml": {"data": {"balance": {"alpha": alpha, "seed": 0}, "profile_name": "tiny"}}},
        "metrics": {"metrics/eval.json": {"data": {"iter1": {"zh": {"cer": {"rate": cer}}}}},
                    "metrics/labels_iter1.json": {"data": {"pnmi_conditional": 0.4}}}}}


EXP_SHOW = [
    {**entry("workspace", None, 0.5, 0.9), "experiments": None},
    {**entry("abcdef0123", None, 0.5, 0.9), "experiments": [
        {"name": "exp-a", "revs": [entry("1111111", "exp-a", 1.0, 0.8)]},
        {"name": "exp-b", "revs": [entry("2222222", "exp-b", 0.0, 0.7)]}]},
]


def test_only_the_params_that_differ_and_the_headline_metrics():
    header, body = headline(rows(EXP_SHOW))
    assert header[:2] == ["experiment", "balance.alpha"]  # seed and profile_name are the same everywhere
    assert len(header) == 2 + 12
    assert [r[0] for r in body] == ["workspace", "abcdef0", "exp-a", "exp-b"]
    col = header.index("iter1 cer")
    assert [r[col] for r in body] == ["0.9", "0.9", "0.8", "0.7"]
    assert [r[header.index("pnmi1")] for r in body] == ["0.4"] * 4
    assert body[0][header.index("loss1/chance")] == "-"  # a metric the run does not have
    text = markdown(header, body)
    assert text.splitlines()[0].startswith("| experiment | balance.alpha |") and "| exp-b | 0.0 |" in text
