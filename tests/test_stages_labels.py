"""Stages features + kmeans end to end on the tiny profile (iteration 1 MFCC, iteration 2
from a tiny HuBERT checkpoint), and the labels as fairseq's HubertDataset reads them."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from hubert.labels.checks import LabelRateError, check_labels, read_label_rate
from stages import features as features_stage
from stages import kmeans as kmeans_stage
from tests._labels_fixtures import make_tiny_checkpoint
from tests.testdata import non_numeric_leaves


def _run(iteration, params, manifests, corpus, work, checkpoint=None, layer_from=None):
    feats, labels, metrics = work / f"features/{iteration}", work / f"labels/{iteration}", work / f"{iteration}.json"
    argv = ["--params", str(params), "--iteration", iteration, "--manifests", str(manifests), "--out", str(feats)]
    argv += ["--checkpoint", str(checkpoint)] if checkpoint else []
    argv += ["--layer-from", str(layer_from)] if layer_from else []
    features_stage.main(argv)
    kmeans_stage.main(["--params", str(params), "--iteration", iteration, "--features", str(feats),
                       "--manifests", str(manifests), "--corpus", str(corpus), "--out", str(labels),
                       "--metrics", str(metrics)])
    return feats, labels, json.loads(metrics.read_text())


@pytest.fixture(scope="module")
def iter1(tiny_params, tiny_manifests, tiny_corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("labels")
    return (work, *_run("iter1", tiny_params, tiny_manifests, tiny_corpus, work))


def test_iter1_outputs(iter1, tiny_params, tiny_manifests):
    work, feats, labels, metrics = iter1
    k = yaml.safe_load(tiny_params.read_text())["labels"]["iter1"]["kmeans"]["n_clusters"]
    assert sorted(p.name for p in feats.iterdir()) == sorted(
        f"{s}_{r}_2.{e}" for s in ("train", "valid") for r in range(2) for e in ("npy", "len"))
    assert sorted(p.name for p in labels.iterdir()) == sorted(
        ["train.km", "valid.km", "valid_en.km", "valid_zh.km", "dict.km.txt", "kmeans.joblib", "label_rate.json"])
    assert read_label_rate(labels) == 100.0
    assert (labels / "dict.km.txt").read_text().splitlines()[-1].startswith(f"{k - 1} ")
    assert len((labels / "dict.km.txt").read_text().splitlines()) == k
    for split in ("train", "valid", "valid_en", "valid_zh"):
        tsv_lines = len((tiny_manifests / f"{split}.tsv").read_text().splitlines()) - 1
        assert len((labels / f"{split}.km").read_text().splitlines()) == tsv_lines
        check_labels(tiny_manifests / f"{split}.tsv", labels / f"{split}.km", labels / "dict.km.txt", 100)
    valid = (labels / "valid.km").read_text().splitlines()
    langs = (tiny_manifests / "valid.lang").read_text().split()
    assert (labels / "valid_zh.km").read_text().splitlines() == [x for x, lang in zip(valid, langs) if lang == "zh"]
    assert not non_numeric_leaves(metrics)
    assert metrics["label_rate"] == 100.0 and metrics["n_clusters"] == k
    assert metrics["utterances"]["without_alignment"] == 0 and metrics["utterances"]["aligned"] > 0
    assert 0 < metrics["pnmi_conditional_shuffled"] < metrics["pnmi_conditional"] < 1
    assert metrics["scored_on_valid"] == 1
    assert 0 < metrics["label_bigram_entropy_bits"] < metrics["label_prior_entropy_bits"]
    assert set(metrics["per_language"]) == {"en", "zh"}
    assert metrics["chance_bits"] == pytest.approx(math.log2(k + 4), abs=1e-4)
    assert 0 < metrics["label_prior_entropy_bits"] <= math.log2(k)
    assert metrics["inertia_per_frame"]["train"] > 0


def test_iter1_quality_is_scored_on_the_distinct_valid_utterances(iter1, tiny_manifests):
    _, feats, _, metrics = iter1
    valid = {line.split("\t")[0] for line in (tiny_manifests / "valid.tsv").read_text().splitlines()[1:]}
    assert metrics["utterances"]["total"] == len(valid)  # held-out voices only: k-means saw train


def test_features_are_dumped_once_per_distinct_utterance(iter1, tiny_manifests):
    _, feats, labels, _ = iter1
    lines = [line.split("\t")[0] for line in (tiny_manifests / "train.tsv").read_text().splitlines()[1:]]
    assert len(set(lines)) < len(lines)  # the balanced list repeats the smaller language
    dumped = sum(len((feats / f"train_{r}_2.len").read_text().split()) for r in range(2))
    assert dumped == len(set(lines))
    km = (labels / "train.km").read_text().splitlines()
    assert len(km) == len(lines)  # every line labelled, a repeat exactly like its first occurrence
    first = {}
    for rel, units in zip(lines, km):
        assert first.setdefault(rel, units) == units


def test_kmeans_rerun_is_deterministic_and_rewrites_the_dictionary(iter1, tiny_params, tiny_manifests, tiny_corpus):
    work, feats, labels, _ = iter1
    before = {p.name: p.read_bytes() for p in labels.iterdir() if p.suffix in (".km", ".txt", ".json")}
    again = work / "again"
    kmeans_stage.main(["--params", str(tiny_params), "--iteration", "iter1", "--features", str(feats),
                       "--manifests", str(tiny_manifests), "--corpus", str(tiny_corpus), "--out", str(labels),
                       "--metrics", str(again / "m.json")])
    after = {p.name: p.read_bytes() for p in labels.iterdir() if p.suffix in (".km", ".txt", ".json")}
    assert after == before


def test_labels_load_in_fairseqs_hubert_dataset(iter1, tiny_manifests):
    from fairseq.data import Dictionary, HubertDataset
    from fairseq.tasks.hubert_pretraining import LabelEncoder

    _, _, labels, _ = iter1
    dictionary = Dictionary.load(str(labels / "dict.km.txt"))
    rate = read_label_rate(labels)
    ds = HubertDataset(str(tiny_manifests / "valid.tsv"), sample_rate=16000, label_paths=[str(labels / "valid.km")],
                       label_rates=rate, pad_list=[dictionary.pad()], eos_list=[dictionary.eos()],
                       label_processors=[LabelEncoder(dictionary)], pad_audio=False, random_crop=False)
    item = ds[0]
    target = item["label_list"][0]
    assert len(target) == len((labels / "valid.km").read_text().splitlines()[0].split())
    assert (target >= dictionary.nspecial).all()  # no <unk>: every unit is in the dictionary


def test_iter2_from_a_hubert_checkpoint_at_the_sweeps_layer(tiny_params, tiny_manifests, tiny_corpus, tmp_path,
                                                             capsys):
    ckpt = make_tiny_checkpoint(tmp_path / "checkpoint_best.pt")
    choice = tmp_path / "choice.json"
    choice.write_text(json.dumps({"layer": 1, "why": "the test's choice"}))
    feats, labels, metrics = _run("iter2", tiny_params, tiny_manifests, tiny_corpus, tmp_path, checkpoint=ckpt,
                                  layer_from=choice)
    assert "layer 1 (the test's choice" in capsys.readouterr().out
    assert read_label_rate(labels) == 50.0 and metrics["label_rate"] == 50.0
    check_labels(tiny_manifests / "train.tsv", labels / "train.km", labels / "dict.km.txt", 50)
    with pytest.raises(LabelRateError):
        check_labels(tiny_manifests / "train.tsv", labels / "train.km", labels / "dict.km.txt", 100)


def test_features_stage_rejects_a_missing_checkpoint_or_layer_choice(tiny_params, tiny_manifests, tmp_path):
    choice = tmp_path / "choice.json"
    choice.write_text(json.dumps({"layer": 2, "why": "x"}))
    with pytest.raises(ValueError, match="needs --checkpoint"):
        features_stage.main(["--params", str(tiny_params), "--iteration", "iter2", "--manifests",
                             str(tiny_manifests), "--out", str(tmp_path / "f"), "--layer-from", str(choice)])
    with pytest.raises(FileNotFoundError, match="layer is auto but the layer sweep's choice .* is missing"):
        features_stage.main(["--params", str(tiny_params), "--iteration", "iter2", "--manifests",
                             str(tiny_manifests), "--out", str(tmp_path / "f"), "--checkpoint", str(choice)])
    with pytest.raises(KeyError, match="labels.iter9"):
        features_stage.main(["--params", str(tiny_params), "--iteration", "iter9", "--manifests",
                             str(tiny_manifests), "--out", str(tmp_path / "f")])


def test_kmeans_stage_rejects_stale_features(iter1, tiny_params, tiny_manifests, tiny_corpus, tmp_path):
    _, feats, _, _ = iter1
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for split in ("train", "valid"):
        lines = (tiny_manifests / f"{split}.tsv").read_text().splitlines(keepends=True)
        (manifests / f"{split}.tsv").write_text("".join(lines[:-1] if split == "valid" else lines))
    with pytest.raises(ValueError, match="features are stale"):
        kmeans_stage.main(["--params", str(tiny_params), "--iteration", "iter1", "--features", str(feats),
                           "--manifests", str(manifests), "--corpus", str(tiny_corpus), "--out", str(tmp_path / "l"),
                           "--metrics", str(tmp_path / "m.json")])
    assert not (tmp_path / "l").exists()
