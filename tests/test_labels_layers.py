"""Stage layers (PNMI of every layer of a HuBERT checkpoint) on the tiny profile, and the one-pass
all-layer features it is built on."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import yaml

from hubert.fairseq.formats import read_tsv
from hubert.labels.features import read_waveform
from hubert.labels.hubert_layers import HubertFeatureReader
from hubert.labels.layers import SCORES, Drawn, chosen_layer, distinct_utterances, draw, sweep_layers
from hubert.labels.params import SweepConfig, iteration_config
from hubert.params import from_dict
from stages import layers as layers_stage
from tests._labels_fixtures import make_tiny_checkpoint
from tests.testdata import non_numeric_leaves

N_LAYERS = 3


@pytest.fixture(scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", layers=N_LAYERS)


@pytest.fixture(scope="module")
def sweep_run(one_thread, ckpt, tiny_params, tiny_manifests, tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("layers")
    returned = layers_stage.main(["--params", str(tiny_params), "--iteration", "iter2", "--checkpoint", str(ckpt),
                                  "--manifests", str(tiny_manifests), "--corpus", str(tiny_corpus),
                                  "--metrics", str(out / "layers_iter1.json"), "--choice", str(out / "choice.json")])
    metrics = json.loads((out / "layers_iter1.json").read_text())
    assert metrics == returned
    return metrics, json.loads((out / "choice.json").read_text())


@pytest.fixture(scope="module")
def sweep(sweep_run):
    return sweep_run[0]


def test_every_layer_scored_over_seeds_and_best_is_the_argmax_of_the_mean(sweep, tiny_params):
    keys = {f"layer_{i}" for i in range(1, N_LAYERS + 1)}
    for name in (*SCORES, "pnmi_en", "pnmi_zh", "pnmi_conditional_std"):
        assert set(sweep[name]) == keys, name
    pnmi = [sweep["pnmi_conditional"][f"layer_{i}"] for i in range(1, N_LAYERS + 1)]
    assert sweep["best_layer"] == int(np.argmax(pnmi)) + 1
    assert sweep["best_pnmi"] == max(pnmi) and sweep["seeds"] == 3
    spreads = [*sweep["pnmi_conditional_std"].values(), sweep["mfcc_at_layer_rate"]["pnmi_conditional_std"]]
    assert sweep["seed_spread"] == max(spreads) and max(spreads) > 0  # three seeds, three different fits
    mfcc = sweep["mfcc"]["pnmi_conditional"]
    assert sweep["best_minus_mfcc"] == pytest.approx(max(pnmi) - mfcc, abs=2e-4)
    # the same MFCC labels, decimated to the layers' 50 Hz: a different (but close) score
    at50 = sweep["mfcc_at_layer_rate"]
    assert set(at50) == set(sweep["mfcc"]) and at50 != sweep["mfcc"]
    assert abs(at50["pnmi_conditional"] - mfcc) < 0.1
    assert sweep["best_minus_mfcc_at_layer_rate"] == pytest.approx(max(pnmi) - at50["pnmi_conditional"], abs=2e-4)
    assert not non_numeric_leaves(sweep)
    kmeans = yaml.safe_load(tiny_params.read_text())["labels"]["iter2"]["kmeans"]
    assert sweep["n_layers"] == N_LAYERS and sweep["n_clusters"] == kmeans["n_clusters"]
    assert sweep["label_rate"] == 50.0
    for scores in [sweep["mfcc"], at50] + [{n: sweep[n][k] for n in SCORES} for k in keys]:
        assert 0 <= scores["pnmi_conditional_shuffled"] < 1 and 0 < scores["pnmi_conditional"] < 1
        assert 0 < scores["phone_purity"] <= 1
    # MFCC clusters phones far better than the layers of an untrained model
    assert mfcc > max(pnmi) and mfcc > 3 * sweep["mfcc"]["pnmi_conditional_shuffled"]


def test_the_choice_names_the_best_layer_for_iteration_2(sweep_run):
    metrics, choice = sweep_run
    assert choice["layer"] == metrics["best_layer"] and "3 k-means seeds" in choice["why"]


def test_sweep_fits_on_train_and_scores_the_valid_voices(sweep, tiny_manifests):
    rows = {s: {rel for rel, _ in read_tsv(tiny_manifests / f"{s}.tsv")[1]} for s in ("train", "valid")}
    # the tiny corpus is under both caps of labels.sweep: every distinct utterance, train ones fit
    assert sweep["utterances"] == sweep["aligned_utterances"] == len(rows["train"] | rows["valid"])
    assert sweep["fit_utterances"] == len(rows["train"])
    assert sweep["scored_utterances"] == len(rows["valid"])
    assert 0 < sweep["fit_frames"] < sweep["frames"]


def test_a_sweep_without_valid_utterances_names_the_manifests_and_the_fix(one_thread, ckpt, tiny_params,
                                                                          tiny_manifests, tiny_corpus, tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for split in ("train", "valid"):
        root, rows = read_tsv(tiny_manifests / f"{split}.tsv")
        kept = rows if split == "train" else []  # a corpus imported without held-out voices
        (manifests / f"{split}.tsv").write_text(root + "\n" + "".join(f"{rel}\t{n}\n" for rel, n in kept))
    labels = yaml.safe_load(tiny_params.read_text())["labels"]
    with pytest.raises(ValueError, match=r"manifests: the sweep drew \d+ train and 0 valid.*balance.valid_speakers"):
        sweep_layers(iteration_config(labels, "iter2"), from_dict(SweepConfig, labels["sweep"]), ckpt, manifests,
                     tiny_corpus, 16000)


def test_a_sweep_whose_valid_voices_have_no_phones_says_so(one_thread, ckpt, tiny_params, tiny_manifests,
                                                           tiny_corpus, tmp_path, capsys):
    """Alignments imported for train only: nothing to score, so no ranking (and no crash)."""
    valid = {rel for rel, _ in read_tsv(tiny_manifests / "valid.tsv")[1]}
    rows = [json.loads(line) for line in (tiny_corpus / "manifest.jsonl").read_text().splitlines()]
    (tmp_path / "manifest.jsonl").write_text("".join(
        json.dumps({**r, "alignment": None if r["path"] in valid else r["alignment"]}) + "\n" for r in rows))
    labels = yaml.safe_load(tiny_params.read_text())["labels"]
    metrics = sweep_layers(iteration_config(labels, "iter2"), from_dict(SweepConfig, labels["sweep"]), ckpt,
                           tiny_manifests, tmp_path, 16000)
    assert "best_layer" not in metrics and metrics["aligned_utterances"] > 0
    assert "none of the" in capsys.readouterr().out and chosen_layer(metrics)[0] == 1


def test_without_alignments_the_middle_layer_is_chosen():
    layer, why = chosen_layer({"n_layers": 12, "utterances": 5, "aligned_utterances": 0})
    assert layer == 6 and "no phone alignments" in why


def test_all_layers_in_one_pass_equal_the_single_layer_reader(one_thread, ckpt, tiny_manifests):
    root, rows = read_tsv(tiny_manifests / "valid.tsv")
    wav = read_waveform(os.path.join(root, rows[0][0]), rows[0][1], 16000)
    for chunk in (1_600_000, 16_000):  # one piece, and fairseq's chunking of long audio
        every = HubertFeatureReader(ckpt, 1, chunk_samples=chunk).get_feats_all_layers(wav)
        assert every.shape[0] == N_LAYERS and every.dtype == np.float32
        for layer in range(1, N_LAYERS + 1):
            single = HubertFeatureReader(ckpt, layer, chunk_samples=chunk).get_feats(wav)
            assert every[layer - 1].shape == single.shape
            assert np.abs(every[layer - 1] - single).max() <= 1e-6


def test_draw_is_seeded_capped_per_split_and_puts_train_first():
    utts = [Drawn("valid" if i % 4 == 0 else "train", f"u{i}", f"/a/u{i}.wav", 16000)
            for i in range(40)]  # 30 train, 10 valid
    a = draw(utts, 12, 4, seed=3)
    assert a == draw(utts, 12, 4, seed=3) and a != draw(utts, 12, 4, seed=4)
    assert len(a) == 16 and len(set(a)) == 16 and set(a) <= set(utts)
    assert [u.split for u in a] == ["train"] * 12 + ["valid"] * 4
    assert a[:12] == sorted(a[:12], key=utts.index) and a[12:] == sorted(a[12:], key=utts.index)
    # the scored split is drawn on its own: capping train leaves every valid utterance
    assert [u for u in draw(utts, 5, -1, seed=0) if u.split == "valid"] == [u for u in utts if u.split == "valid"]
    assert sorted(draw(utts, -1, -1, seed=0), key=utts.index) == utts
    assert len(draw(utts, 100, 100, seed=0)) == 40


def test_distinct_utterances_drop_repeated_lines(tiny_manifests):
    utts = distinct_utterances(tiny_manifests, ("train",))
    _, rows = read_tsv(tiny_manifests / "train.tsv")
    assert [u.rel for u in utts] == list(dict.fromkeys(rel for rel, _ in rows))


def test_sweep_config_is_strict():
    cfg = from_dict(SweepConfig, {"fit_utterances": -1, "scored_utterances": 50, "seed": 1})
    assert (cfg.fit_utterances, cfg.scored_utterances) == (-1, 50)
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(SweepConfig, {"max_utterances": 10}, "labels.sweep")  # the former single draw
    for key in ("fit_utterances", "scored_utterances"):
        with pytest.raises(ValueError, match=f"labels.sweep.{key}=0"):
            SweepConfig(**{key: 0})
