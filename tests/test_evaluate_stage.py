"""The evaluate stage on the tiny fine-tuned models: what it decodes, what it writes,
that it is reproducible, and that a missing model is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests._finetune_fixtures import finetune_run
from tests.testdata import LIBRI_CLIP, non_numeric_leaves


@pytest.fixture(scope="module")
def clone(tmp_path_factory, tiny_corpus, tiny_manifests) -> Path:
    run = finetune_run(tmp_path_factory, tiny_corpus, tiny_manifests)
    assert run.joint[0] == 0 and run.adapted[0] == 0
    return run.clone


def evaluate_params(clone: Path, tmp_path: Path, **changes) -> Path:
    """The clone's params without the untrained scratch variant, with the real LibriSpeech clip by absolute path."""
    params = yaml.safe_load((clone / "params.yaml").read_text(encoding="utf-8"))
    del params["finetune"]["variants"]["scratch"]
    params["evaluate"]["compare"] = [["iter1_zh", "iter1"]]
    params["evaluate"]["real_speech"][0]["audio"] = str(LIBRI_CLIP)
    params["evaluate"].update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return path


def run_evaluate(clone: Path, params: Path, out: Path, monkeypatch) -> dict:
    from stages import evaluate as evaluate_stage

    monkeypatch.chdir(clone)  # the letters manifests' root line is relative to the repository root
    return evaluate_stage.main(["--params", str(params), "--finetuned", "data/finetune", "--letters", "data/letters",
                                "--out", str(out / "eval"), "--metrics", str(out / "eval.json")])


@pytest.fixture(scope="module")
def evaluated(clone, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    with pytest.MonkeyPatch.context() as mp:
        metrics = run_evaluate(clone, evaluate_params(clone, tmp), tmp, mp)
    return metrics, tmp


def test_every_variant_is_scored_on_its_languages(evaluated, clone):
    metrics, out = evaluated
    assert not non_numeric_leaves(metrics)
    assert json.loads((out / "eval.json").read_text()) == metrics
    joint, adapted = metrics["iter1"], metrics["iter1_zh"]
    assert set(joint["zh"]) >= {"cer", "mer", "unk_rate", "utterances"}
    assert set(joint["en"]) >= {"wer", "cer", "mer"}
    assert set(joint["mix"]) >= {"mer", "cer"} and joint["mix"]["utterances"] == 6
    for per in (joint["zh"]["cer"], joint["en"]["wer"], joint["mix"]["mer"]):
        assert per["low"] <= per["rate"] <= per["high"]
        assert per["rate"] == pytest.approx(per["sub"] + per["del"] + per["ins"], abs=2e-4)
    # the Mandarin adaptation is scored on Mandarin only; real English speech only by English-capable models
    assert set(adapted) - {"decode_s"} == {"zh"}
    assert set(joint["real_speech"]) == {LIBRI_CLIP.stem} and 0 <= joint["real_speech"][LIBRI_CLIP.stem]["wer"]
    assert "lid_accuracy" not in joint  # no language-ID token in these variants


def test_per_utterance_hypotheses_are_kept(evaluated, clone):
    metrics, out = evaluated
    rows = [json.loads(line) for line in (out / "eval" / "iter1" / "utterances.jsonl").read_text().splitlines()]
    tests = (clone / "data" / "letters" / "test.tsv").read_text().splitlines()[1:]
    assert len(rows) == len(tests) + 6 + 1
    assert {r["set"] for r in rows} == {"test", "codeswitch", "real"}
    mix = [r for r in rows if r["set"] == "codeswitch"]
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in r["ref"]) and any("a" <= ch <= "z" for ch in r["ref"])
               for r in mix)
    zh = [r for r in rows if r["lang"] == "zh" and r["set"] == "test"]
    assert metrics["iter1"]["zh"]["utterances"] == len(zh)
    total = [sum(r["errors"]["cer"][i] for r in zh) for i in range(4)]
    assert metrics["iter1"]["zh"]["cer"]["rate"] == pytest.approx(sum(total[:3]) / total[3], abs=1e-4)


def test_floors_and_paired_comparison(evaluated):
    metrics, out = evaluated
    assert metrics["floors"]["zh"]["empty_cer"] == 1.0 and metrics["floors"]["en"]["empty_wer"] == 1.0
    assert metrics["floors"]["zh"]["constant_cer"] <= 1.0
    constant = json.loads((out / "eval" / "floors.json").read_text())["constant_output"]
    assert set(constant) == {"zh", "en"}
    diff = metrics["compare"]["iter1_zh_minus_iter1"]
    assert set(diff) == {"zh_cer"}  # only the language both decoded
    assert diff["zh_cer"]["low"] <= diff["zh_cer"]["difference"] <= diff["zh_cer"]["high"]
    assert diff["zh_cer"]["difference"] == pytest.approx(
        metrics["iter1_zh"]["zh"]["cer"]["rate"] - metrics["iter1"]["zh"]["cer"]["rate"], abs=2e-4)


def test_the_same_inputs_give_the_same_metrics(evaluated, clone, tmp_path, monkeypatch):
    metrics, _ = evaluated
    again = run_evaluate(clone, evaluate_params(clone, tmp_path), tmp_path, monkeypatch)
    for name in ("iter1", "iter1_zh"):
        metrics[name].pop("decode_s"), again[name].pop("decode_s")
    assert again == metrics


def test_a_variant_without_a_model_is_named(clone, tmp_path, monkeypatch):
    params = yaml.safe_load((clone / "params.yaml").read_text(encoding="utf-8"))  # scratch declared, never trained
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"scratch/checkpoint\.pt does not exist.*dvc repro finetune@scratch"):
        run_evaluate(clone, path, tmp_path, monkeypatch)


def test_a_model_of_another_vocabulary_is_refused(clone, tmp_path, monkeypatch):
    letters = tmp_path / "letters"
    import shutil

    shutil.copytree(clone / "data" / "letters", letters)
    lines = (letters / "dict.ltr.txt").read_text(encoding="utf-8").splitlines()
    (letters / "dict.ltr.txt").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # one symbol fewer
    from stages import evaluate as evaluate_stage

    monkeypatch.chdir(clone)
    with pytest.raises(ValueError, match=r"iter1/checkpoint\.pt outputs another vocabulary than .*dict\.ltr\.txt.*"
                                         r"dvc repro finetune@iter1"):
        evaluate_stage.main(["--params", str(evaluate_params(clone, tmp_path)), "--finetuned", "data/finetune",
                             "--letters", str(letters), "--out", str(tmp_path / "eval"),
                             "--metrics", str(tmp_path / "eval.json")])
