"""A killed run resumes to exactly the result of the uninterrupted one (tiny profile).

Pretraining and fine-tuning are each run once without interruption and once
killed (SIGKILL to the stage and every process it started, as a preempted job
ends) at an update drawn by a seeded generator, between two checkpoints, in
the middle of an epoch, then run again. The resumed run must end with the same
metrics (every loss, accuracy and error figure; only clock times differ), the
same final weights, bit for bit, and the same DVCLive curves, each step once.
A second pretraining kill also tears ``checkpoint_last.pt`` to half its size,
as a kill while fairseq writes it does: the run continues from the numbered
checkpoint beside it and still ends where the uninterrupted run does.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from hubert.fairseq.checkpoint import checkpoint_updates, safe_load
from hubert.fairseq.launcher import LAST, parse_log_line, read_log
from tests._finetune_fixtures import finetune_args, finetune_run
from tests._pretrain_fixtures import kill_family, make_clone, resumed_run, run_script, run_stage, straight_run

pytestmark = pytest.mark.slow
PRETRAIN = Path("data/pretrain/iter1")
# what a resumed run may differ in: the clock
CLOCK = {"wall_time_s", "audio_s_per_s", "train_s", "s_per_update"}


def numbers(tree, path=""):
    """{dotted key: value} of a metrics file's leaves, clock times left out."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() if key not in CLOCK for k, v in numbers(sub, f"{path}{key}.").items()}
    return {path[:-1]: tree}


def curves(live: Path) -> dict[str, list[str]]:
    """Every DVCLive plot file's rows (step and value), the throughput curve (a clock) left out."""
    return {p.relative_to(live).as_posix(): p.read_text().splitlines()
            for p in sorted(live.rglob("*.tsv")) if p.stem != "audio_s_per_s"}


def assert_same_weights(a: Path, b: Path) -> None:
    mine, theirs = safe_load(a)["model"], safe_load(b)["model"]
    assert mine.keys() == theirs.keys()
    different = [k for k in mine if not torch.equal(mine[k], theirs[k])]
    assert not different, f"{len(different)} of {len(mine)} tensors differ, e.g. {different[:3]}"


def kill_at(update: int, killed: list[int]):
    """An ``on_line`` that kills the stage when fairseq logs ``update`` (training is then in update + 1)."""
    def on_line(line, stage):
        parsed = parse_log_line(line)
        if not killed and parsed and parsed[0] == "train_inner" and int(parsed[1]["num_updates"]) >= update:
            killed.append(int(parsed[1]["num_updates"]))
            kill_family(stage)
    return on_line


def assert_resumed_like(resumed: Path, straight: Path, metrics: str, live: str, checkpoint: Path) -> None:
    mine, theirs = (json.loads((c / metrics).read_text()) for c in (resumed, straight))
    assert numbers(mine) == numbers(theirs)
    assert_same_weights(resumed / checkpoint, straight / checkpoint)
    assert curves(resumed / live) == curves(straight / live)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_corpus, tiny_manifests):
    return straight_run(tmp_path_factory, tiny_corpus, tiny_manifests)


# ---------------------------------------------------------------- pretraining
def test_a_run_killed_after_a_checkpoint_ends_as_the_uninterrupted_one(straight, tmp_path_factory, tiny_corpus,
                                                                       tiny_manifests):
    run = resumed_run(tmp_path_factory, tiny_corpus, tiny_manifests)  # killed right after its checkpoint at 10
    assert run.checkpoint_after_kill == 10 and run.second[0] == 0, run.second[1][-3000:]
    assert_resumed_like(run.clone, straight.clone, "metrics/pretrain_iter1.json", "dvclive/pretrain_iter1",
                        PRETRAIN / "checkpoint.pt")


def test_a_run_killed_mid_epoch_with_its_last_checkpoint_torn_ends_as_the_uninterrupted_one(
        straight, tmp_path, tiny_corpus, tiny_manifests):
    # between two checkpoints (every 10 updates) and never at one: fairseq has trained past its checkpoint
    update = random.Random(35).choice([u for u in range(12, 40, 2) if u % 10])
    clone = make_clone(tmp_path / "repo", tiny_corpus, tiny_manifests)
    killed: list[int] = []
    code, out = run_stage(clone, kill_at(update, killed))
    assert code != 0 and killed == [update], out[-3000:]
    save = clone / PRETRAIN / "checkpoints"
    checkpoint = update // 10 * 10
    last = save / LAST
    assert checkpoint_updates(last) == checkpoint < update  # fairseq had trained past its checkpoint
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed while fairseq wrote it
    code, out = run_stage(clone)
    assert code == 0, out[-3000:]
    assert f"{LAST} cannot be read" in out and "continuing from checkpoint_" in out
    assert f"resuming at update {checkpoint}" in out
    (aside,) = (clone / PRETRAIN / "set_aside").iterdir()
    assert (aside / LAST).stat().st_size < (save / LAST).stat().st_size
    assert_resumed_like(clone, straight.clone, "metrics/pretrain_iter1.json", "dvclive/pretrain_iter1",
                        PRETRAIN / "checkpoint.pt")
    log = [r.step for r in read_log(save) if r.tag == "train_inner"]
    assert log == list(range(2, 41, 2))  # each update's record once


# ---------------------------------------------------------------- fine-tuning
def test_a_finetuning_run_killed_mid_epoch_ends_as_the_uninterrupted_one(tmp_path_factory, tmp_path, tiny_corpus,
                                                                        tiny_manifests):
    straight_ft = finetune_run(tmp_path_factory, tiny_corpus, tiny_manifests)  # finetune@iter1, never killed
    assert straight_ft.joint[0] == 0, straight_ft.joint[1][-3000:]
    clone = tmp_path / "repo"
    shutil.copytree(straight_ft.clone, clone, symlinks=True, ignore=lambda folder, names: [
        n for n in names if n == "finetune" and Path(folder).name in ("data", "dvclive", "metrics")])
    assert not (clone / "data/finetune").exists() and not (clone / "dvclive/finetune").exists()
    # validation and a checkpoint every 10 updates, a record every 5: killed between two checkpoints
    update = random.Random(35).choice([15, 25])
    killed: list[int] = []
    args = ["stages/finetune.py", *finetune_args("iter1", "data/pretrain/iter1/checkpoint.pt")]
    code, out = run_script(clone, args, kill_at(update, killed), timeout=300)
    assert code != 0 and killed == [update], out[-3000:]
    code, out = run_script(clone, args, timeout=300)
    assert code == 0, out[-3000:]
    assert f"at update {update // 10 * 10} (same config and inputs)" in out
    assert_resumed_like(clone, straight_ft.clone, "metrics/finetune/iter1.json", "dvclive/finetune/iter1",
                        Path("data/finetune/iter1/checkpoint.pt"))


# ---------------------------------------------------------------- two CPU processes (gloo)
def test_two_gloo_processes_killed_mid_epoch_end_as_the_uninterrupted_pair(tmp_path, tiny_corpus, tiny_manifests):
    """Each rank crops, masks and drops layers from the seed, the update and its items: a pair of
    ranks killed between checkpoints and restarted continues as the pair that never stopped."""
    overrides = ["pretrain.hardware.cpu_processes=2"]
    straight = make_clone(tmp_path / "straight", tiny_corpus, tiny_manifests, overrides=overrides)
    code, out = run_stage(straight)
    assert code == 0 and "as rank 1" in out, out[-3000:]
    clone = make_clone(tmp_path / "killed", tiny_corpus, tiny_manifests, overrides=overrides)
    update = random.Random(36).choice([u for u in range(12, 40, 2) if u % 10])
    killed: list[int] = []
    code, out = run_stage(clone, kill_at(update, killed))
    assert code != 0 and killed == [update], out[-3000:]
    code, out = run_stage(clone)
    assert code == 0 and f"at update {update // 10 * 10} (same config and inputs)" in out, out[-3000:]
    assert_resumed_like(clone, straight, "metrics/pretrain_iter1.json", "dvclive/pretrain_iter1",
                        PRETRAIN / "checkpoint.pt")
