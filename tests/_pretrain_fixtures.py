"""Helpers for the pretraining tests: tiny clones of the repository that fairseq trains in.

``make_clone`` lays out a minimal clone at any path, the way a user's checkout
looks to the pretrain stage: hubert/ and stages/ copied from this repository
(the fairseq plugin is found relative to the clone, as in a real checkout),
data/corpus linked to the session's tiny corpus, data/manifests with the
relative root line ``data/corpus``, data/labels/iter1 with labels made here
(seeded random units at 100 Hz, one line per manifest line, a dict.km.txt
written whole and label_rate.json), and params.yaml composed for profile=tiny.

``run_stage`` runs ``python stages/pretrain.py`` in such a clone as a
subprocess (cwd = the clone, PYTHONPATH = the clone), streaming its output to
a callback, which may kill the training process mid-run.

``resumed_run`` is the one tiny pretraining the test modules share: killed
after its first checkpoint, then resumed to the end (made once per session);
``straight_run`` the same run never interrupted, in a clone at another path
(made once per session too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubert.fairseq.checkpoint import checkpoint_updates
from hubert.fairseq.launcher import LAST, read_log
from hubert.params import compose

REPO = Path(__file__).resolve().parent.parent
MFCC_RATE = 100.0


def compose_params(overrides: list[str]) -> str:
    """params.yaml text for ``overrides`` (hubert.params.compose shields itself from
    the schema that ``import fairseq`` registers in Hydra's ConfigStore)."""
    return compose(REPO / "params", overrides)


def stage_args(iteration: str = "iter1") -> list[str]:
    return ["--params", "params.yaml", "--iteration", iteration, "--manifests", "data/manifests",
            "--labels", f"data/labels/{iteration}", "--out", f"data/pretrain/{iteration}",
            "--metrics", f"metrics/pretrain_{iteration}.json", "--live", f"dvclive/pretrain_{iteration}"]


def write_labels(manifests: Path, out: Path, units: int, dict_units: int | None = None, seed: int = 0,
                 rate: float = MFCC_RATE) -> None:
    """{train,valid}.km with seeded random units 0..units-1 at ``rate`` (frame counts of
    Kaldi MFCC: 25 ms windows every 10 ms), dict.km.txt with ``dict_units`` lines
    (default: units), label_rate.json."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    hop = int(16000 / rate)
    for split in ("train", "valid"):
        lines = (manifests / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        rows = []
        for line in lines:
            n = int(line.split("\t")[1])
            frames = 1 + (n - 400) // hop
            rows.append(" ".join(map(str, rng.integers(0, units, frames))))
        (out / f"{split}.km").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    k = units if dict_units is None else dict_units
    (out / "dict.km.txt").write_text("".join(f"{i} 1\n" for i in range(k)), encoding="utf-8")
    (out / "label_rate.json").write_text(json.dumps({"label_rate": rate}) + "\n", encoding="utf-8")


def make_clone(root: Path, corpus: Path, manifests: Path, *, units: int = 20, dict_units: int | None = None,
               overrides: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("hubert", "stages"):
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    (root / "data").mkdir()
    (root / "data" / "corpus").symlink_to(Path(corpus).resolve(), target_is_directory=True)
    (root / "data" / "manifests").mkdir()
    for split in ("train", "valid"):
        body = (Path(manifests) / f"{split}.tsv").read_text(encoding="utf-8").split("\n", 1)[1]
        (root / "data" / "manifests" / f"{split}.tsv").write_text("data/corpus\n" + body, encoding="utf-8")
    write_labels(root / "data" / "manifests", root / "data" / "labels" / "iter1", units, dict_units)
    (root / "params.yaml").write_text(compose_params(["profile=tiny", *(overrides or [])]),
                                      encoding="utf-8")
    return root


def run_stage(clone: Path, on_line: Callable[[str, subprocess.Popen], None] | None = None,
              iteration: str = "iter1", timeout: float = 240) -> tuple[int, str]:
    """Run the stage in ``clone``; returns (exit code, whole output)."""
    return run_script(clone, ["stages/pretrain.py", *stage_args(iteration)], on_line, timeout)


def run_script(clone: Path, args: list[str], on_line: Callable[[str, subprocess.Popen], None] | None = None,
               timeout: float = 240) -> tuple[int, str]:
    """``python *args`` in ``clone``, its output streamed line by line to ``on_line(line, process)``,
    which may kill it; returns (exit code, whole output)."""
    # One torch thread: these runs are tiny, and on a shared 2-core machine two
    # spinning OpenMP threads per process make them many times slower.
    env = dict(os.environ, PYTHONPATH=str(clone), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, *args], cwd=clone, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line, proc)
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, "".join(lines)


def training_child(stage: subprocess.Popen):
    """The fairseq-hydra-train process the stage started."""
    import psutil

    for child in psutil.Process(stage.pid).children(recursive=True):
        if "fairseq_cli.hydra_train" in " ".join(child.cmdline()):
            return child
    raise AssertionError("the stage has no fairseq-hydra-train child process")


def kill_family(stage: subprocess.Popen) -> None:
    """SIGKILL the stage and every process it started, as a preempted job or a closed laptop
    ends them: nothing gets to clean up or finish writing."""
    import psutil

    family = psutil.Process(stage.pid).children(recursive=True) + [psutil.Process(stage.pid)]
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def files_under(root: Path, *parts: str) -> list[Path]:
    base = root.joinpath(*parts)
    return sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]


@dataclass(frozen=True)
class ResumedRun:
    """A tiny pretraining killed after its first checkpoint and resumed to the end."""

    clone: Path
    killed_at_line: str
    first: tuple[int, str]  # (exit code, output) of the killed run
    checkpoint_after_kill: int  # num_updates of checkpoint_last.pt between the runs
    log_after_kill: list[int]  # train_inner steps in train_log.jsonl between the runs
    second: tuple[int, str]  # the resumed run


_RUNS: dict[str, ResumedRun] = {}


def resumed_run(tmp_path_factory, corpus: Path, manifests: Path) -> ResumedRun:
    """Once per test session (several test modules share it): make a clone, run the
    stage, kill fairseq as soon as it reports its first saved checkpoint, run again."""

    key = str(tmp_path_factory.getbasetemp())
    if key in _RUNS:
        return _RUNS[key]
    clone = make_clone(tmp_path_factory.mktemp("clone_a") / "repo", corpus, manifests)
    killed: list[str] = []

    def kill_after_first_checkpoint(line: str, stage: subprocess.Popen) -> None:
        if not killed and "Saved checkpoint" in line:
            killed.append(line)
            training_child(stage).kill()

    first = run_stage(clone, kill_after_first_checkpoint)
    save_dir = clone / "data" / "pretrain" / "iter1" / "checkpoints"
    after_kill = checkpoint_updates(save_dir / LAST) if (save_dir / LAST).is_file() else -1
    log_steps = [r.step for r in read_log(save_dir) if r.tag == "train_inner"]
    second = run_stage(clone)
    _RUNS[key] = ResumedRun(clone, killed[0] if killed else "", first, after_kill, log_steps, second)
    return _RUNS[key]


_STRAIGHT: dict[str, tuple[Path, tuple[int, str]]] = {}


@dataclass(frozen=True)
class StraightRun:
    """The tiny pretraining of :func:`resumed_run`, never interrupted, in a clone at another path."""

    clone: Path
    run: tuple[int, str]  # (exit code, output)


def straight_run(tmp_path_factory, corpus: Path, manifests: Path) -> StraightRun:
    key = str(tmp_path_factory.getbasetemp())
    if key not in _STRAIGHT:
        clone = make_clone(tmp_path_factory.mktemp("straight") / "another place" / "deeper" / "clone", corpus,
                           manifests)
        _STRAIGHT[key] = (clone, run_stage(clone))
    clone, result = _STRAIGHT[key]
    assert result[0] == 0, result[1][-3000:]
    return StraightRun(clone, result)
