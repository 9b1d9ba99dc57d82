"""stages/pretrain.py end to end on the tiny profile, in throwaway clones of the
repository: resume after a killed training process, outputs identical from two
clone paths, the loss check stopping an inconsistent dictionary."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from hubert.fairseq.launcher import parse_log_line, read_log
from tests._pretrain_fixtures import (
    compose_params,
    files_under,
    make_clone,
    resumed_run,
    run_stage,
    stage_args,
    straight_run,
)

pytestmark = pytest.mark.slow
OUT = Path("data/pretrain/iter1")
OUTPUTS = (("data", "pretrain"), ("metrics",), ("dvclive",))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_corpus, tiny_manifests):
    return resumed_run(tmp_path_factory, tiny_corpus, tiny_manifests)


def fairseq_records(output: str, tag: str = "train_inner") -> list[dict[str, float]]:
    return [stats for tag_, stats in filter(None, map(parse_log_line, output.splitlines())) if tag_ == tag]


def tsv_steps(path: Path) -> list[int]:
    return [int(line.split("\t")[0]) for line in path.read_text().splitlines()[1:]]


def state(clone: Path) -> dict:
    from hubert.fairseq.checkpoint import safe_load

    return safe_load(clone / OUT / "checkpoint.pt")


# ---------------------------------------------------------------- resume
def test_killed_training_fails_the_stage_and_keeps_its_checkpoint(run):
    code, out = run.first
    assert "@ 10 updates" in run.killed_at_line, run.killed_at_line
    assert code != 0
    assert "fairseq-hydra-train was killed by signal 9" in out and "run the stage again" in out
    assert run.checkpoint_after_kill == 10
    assert run.log_after_kill[:5] == [2, 4, 6, 8, 10] and run.log_after_kill[-1] < 40


def test_next_run_continues_from_the_last_checkpoint(run):
    code, out = run.second
    assert code == 0, out[-3000:]
    assert "resuming from data/pretrain/iter1/checkpoints/checkpoint_last.pt at update 10" in out
    assert re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ 10 updates\)", out)
    steps = [int(r["num_updates"]) for r in fairseq_records(out)]
    assert steps[0] == 12 and steps[-1] == 40  # num_updates continues; it does not start over at 2
    log = [r.step for r in read_log(run.clone / OUT / "checkpoints") if r.tag == "train_inner"]
    assert log == list(range(2, 41, 2))  # the whole curve, each update once
    assert tsv_steps(run.clone / "dvclive/pretrain_iter1/plots/metrics/train/loss_m.tsv") == log
    assert state(run.clone)["optimizer_history"][-1]["num_updates"] == 40


def test_metrics_explain_the_loss(run):
    m = json.loads((run.clone / "metrics/pretrain_iter1.json").read_text())
    first_run_records = fairseq_records(run.first[1])
    assert m["loss_m"]["first"] == first_run_records[0]["loss_m_0"]  # the first loss survives the resume
    assert m["labels"]["units"] == 20 and m["labels"]["label_rate"] == 100.0
    assert m["labels"]["chance_bits"] == pytest.approx(math.log2(24), abs=1e-6)
    assert 0.9 < m["loss_m"]["first_over_chance"] < 1.1
    assert m["labels"]["prior_entropy_bits"] == pytest.approx(math.log2(20), abs=0.05)  # uniform random labels
    assert m["training"]["updates"] == 40 and m["training"]["audio_s_per_s"] > 0
    assert m["loss_m"]["last"] == fairseq_records(run.second[1])[-1]["loss_m_0"]
    assert m["batch"]["hours_per_update"] == pytest.approx(100000 / 16000 / 3600, abs=1e-6)
    assert "effective batch 1 x 100000 x update_freq 1" in run.second[1] and "32 x 1400000" in run.second[1]
    names = {p.stem for p in (run.clone / "dvclive/pretrain_iter1/plots/metrics/train").glob("*.tsv")}
    assert {"loss", "loss_m", "loss_u", "features_pen", "accuracy_m", "accuracy_u", "lr", "gnorm",
            "audio_s_per_s"} <= names
    assert {p.stem for p in (run.clone / "dvclive/pretrain_iter1/plots/metrics/valid").glob("*.tsv")} >= \
        {"loss_m", "accuracy_m"}


def test_explain_reads_the_logs_this_pipeline_writes(run, tmp_path, capsys):
    from hubert.report import explain

    labels = run.clone / "data/labels/iter1"
    # the pipeline's train_log.jsonl (the whole curve across the resume), with the run's dictionary and labels
    assert explain.main([str(run.clone / OUT / "checkpoints/train_log.jsonl"), "--dict", str(labels / "dict.km.txt"),
                         "--labels", str(labels / "train.km"), "--gpus", "0", "--max-tokens", "100000",
                         "--out", str(tmp_path / "jsonl")]) == 0
    out = capsys.readouterr().out
    m = json.loads((run.clone / "metrics/pretrain_iter1.json").read_text())
    assert f"began at {m['loss_m']['first']:.2f} bits of masked loss" in out and "chance level of 24 classes" in out
    assert f"ended at {m['loss_m']['last']:.2f} bits of masked loss after 40 updates" in out
    assert f"H(z) = {m['labels']['prior_entropy_bits']:.2f}" in out
    # fairseq's own console output of the resumed run: the batch comes from the config fairseq printed
    console = tmp_path / "console.log"
    console.write_text(run.second[1])
    assert explain.main([str(console), "--k", "20", "--out", str(tmp_path / "console")]) == 0
    out = capsys.readouterr().out
    assert "effective batch 1 x 100,000 samples x update_freq 1" in out and "update_freq 448 would match it" in out
    assert "after 40 updates" in out


def test_completed_run_is_not_trained_again(run):
    before = (run.clone / "metrics/pretrain_iter1.json").read_text()
    code, out = run_stage(run.clone)
    assert code == 0, out[-3000:]
    assert "already has 40 of 40 updates: nothing to train" in out and "fairseq_cli.hydra_train" not in out
    assert (run.clone / "metrics/pretrain_iter1.json").read_text() == before


def test_training_longer_continues_the_finished_run(run, tmp_path):
    """max_update 40 -> 60 (the usual "train longer"), with other workers and logging: the run
    continues from its checkpoint at update 40 instead of starting over."""
    clone = tmp_path / "repo"
    shutil.copytree(run.clone, clone, symlinks=True)
    (clone / "params.yaml").write_text(compose_params(["profile=tiny", "pretrain.optimization.max_update=60",
                                                       "pretrain.schedule.log_interval=4"]), encoding="utf-8")
    code, out = run_stage(clone)
    assert code == 0, out[-3000:]
    assert "resuming from data/pretrain/iter1/checkpoints/checkpoint_last.pt at update 40" in out
    assert "optimization.max_update 40 -> 60" in out and "common.log_interval 2 -> 4" in out
    assert re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ 40 updates\)", out)
    log = [r.step for r in read_log(clone / OUT / "checkpoints") if r.tag == "train_inner"]
    assert log == list(range(2, 41, 2)) + list(range(44, 61, 4))  # the first 40 updates' curve is kept
    assert state(clone)["optimizer_history"][-1]["num_updates"] == 60
    assert not (clone / OUT / "set_aside").exists()


# ---------------------------------------------------------------- portability
def test_outputs_are_the_same_from_another_clone_path(run, tmp_path_factory, tiny_corpus, tiny_manifests):
    straight = straight_run(tmp_path_factory, tiny_corpus, tiny_manifests)
    other, out = straight.clone, straight.run[1]
    assert " " in str(other)  # a path with spaces
    assert {p.name for p in other.iterdir()} == {"hubert", "stages", "data", "params.yaml", "metrics",
                                                 "dvclive"}  # no .hydra/, outputs/, logs
    assert {p.name for p in (other / OUT).iterdir()} == {"fairseq_config.yaml", "checkpoints", "checkpoint.pt"}
    for name in ("fairseq_config.yaml", "checkpoints/run.json"):
        assert (other / OUT / name).read_bytes() == (run.clone / OUT / name).read_bytes(), name
    assert state(other)["cfg"] == state(run.clone)["cfg"]
    # same seed, same data: the same training (up to where the other run was killed)
    keys = ("loss", "loss_m_0", "loss_u_0", "loss_features_pen", "count_m_0", "count_u_0", "correct_m_0", "gnorm")
    before_kill = {int(r["num_updates"]): r for r in fairseq_records(run.first[1])}
    uninterrupted = {int(r["num_updates"]): r for r in fairseq_records(out)}
    assert sorted(before_kill)[:5] == [2, 4, 6, 8, 10]
    for step in sorted(before_kill):
        assert {k: uninterrupted[step][k] for k in keys} == {k: before_kill[step][k] for k in keys}, step
    assert state(other)["cfg"]["task"]["data"] == "data/manifests"
    mine, theirs = (json.loads((c / "metrics/pretrain_iter1.json").read_text()) for c in (other, run.clone))
    assert mine.keys() == theirs.keys() and mine["labels"] == theirs["labels"]
    for clone in (other, run.clone):
        for path in (p for parts in OUTPUTS for p in files_under(clone, *parts)):
            data = path.read_bytes()
            for root in (other, run.clone, tmp_path_factory.getbasetemp()):
                assert str(root).encode() not in data, f"{path} holds the absolute path {root}"


# ---------------------------------------------------------------- loss check
def test_dictionary_of_another_kmeans_run_stops_training(tmp_path, tiny_corpus, tiny_manifests):
    """Labels use 20 units but dict.km.txt lists 500 (both pass the static checks:
    every label is in the dictionary): fairseq starts at log2(504) = 8.98 bits,
    not the labels' chance log2(24) = 4.58, and the run is stopped at once."""
    clone = make_clone(tmp_path / "repo", tiny_corpus, tiny_manifests, units=20, dict_units=500)
    code, out = run_stage(clone)
    assert code != 0
    assert "LossSanityError: pretraining stopped at update 2" in out
    assert "500 units" in out and "does not belong to these labels" in out
    first = fairseq_records(out)[0]["loss_m_0"]
    assert abs(first - math.log2(504)) < 0.1 * math.log2(504)
    assert not (clone / OUT / "checkpoints").exists()  # nothing of it will be resumed...
    (kept,) = (clone / OUT / "set_aside").iterdir()  # ...and nothing of it is deleted
    assert "rejected" in kept.name and "does not belong to these labels" in (kept / "REASON.txt").read_text()
    assert not (clone / "metrics/pretrain_iter1.json").exists()


def test_empty_dictionary_is_refused_before_launching(tmp_path, tiny_corpus, tiny_manifests, monkeypatch):
    from hubert.fairseq.formats import DictionaryError
    from stages import pretrain

    clone = make_clone(tmp_path / "repo", tiny_corpus, tiny_manifests)
    (clone / "data/labels/iter1/dict.km.txt").write_text("")
    monkeypatch.chdir(clone)
    with pytest.raises(DictionaryError, match="empty"):
        pretrain.main(stage_args())
    assert not (clone / OUT).exists()


def test_fp16_on_the_cpu_is_refused(tmp_path, tiny_corpus, tiny_manifests, monkeypatch):
    from stages import pretrain

    clone = make_clone(tmp_path / "repo", tiny_corpus, tiny_manifests,
                       overrides=["pretrain.hardware.precision=fp16"])
    monkeypatch.chdir(clone)
    with pytest.raises(ValueError, match="needs GPUs"):
        pretrain.main(stage_args())
    assert not (clone / OUT).exists()
