"""A throwaway clone of this repository's HEAD that has run the tiny profile through
``dvc exp run``, shared by the experiment-workflow and remote round-trip tests.

Set up as ``.ci/tiny_run.sh`` sets up its clone: ``git clone`` of HEAD (so the tests
run the committed code, as CI does), this checkout's ``.venv`` linked in, ``../shared``
linked beside the clone, and ``PYTHONPATH`` at the clone (the venv installs the
checkout editable; the clone's stages must import the clone's code). Commands run
at ``nice`` 15 with PATH starting at the venv, as ``source .venv/bin/activate`` does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Clone:
    root: Path
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, *cmd: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run ``cmd`` in the clone; on failure the error shows the command's output tail."""
        start = time.monotonic()
        proc = subprocess.run(["nice", "-n", "15", *cmd], cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        self.timings[" ".join(cmd)] = time.monotonic() - start
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-6000:]}")
        return proc

    def dvc(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("dvc", *args, **kwargs)

    def json(self, *args: str) -> object:
        return json.loads(self.dvc(*args).stdout)


def make_clone(dest: Path, source: Path = REPO) -> Clone:
    """``git clone`` of ``source``'s HEAD at ``dest`` (its parent gets the ``shared`` link), ready for dvc."""
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    venv = (REPO / ".venv").resolve()
    if not (dest / ".venv").exists():
        (dest / ".venv").symlink_to(venv)
    # .gitignore's `.venv/` matches a folder, not this link: keep it out of `git add -A`
    with open(dest / ".git" / "info" / "exclude", "a", encoding="utf-8") as exclude:
        exclude.write("/.venv\n")
    shared = REPO.parent / "shared"
    if shared.is_dir() and not (dest.parent / "shared").exists():
        # the evaluate stage decodes ../shared/testdata (real speech); without it that item is skipped
        (dest.parent / "shared").symlink_to(shared.resolve())
    for key, value in (("user.name", "test"), ("user.email", "test@localhost")):
        subprocess.run(["git", "-C", str(dest), "config", key, value], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(dest),
           "DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATE_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    return Clone(dest, env)


def share_with_the_ci_gate(clone: Clone) -> None:
    """This run is the tiny pipeline of HEAD that CI's metrics gate checks (.ci/tiny_run.sh):
    where .ci/run names a folder in HUBERT_DVC_TINY_RUN, its metrics and commit go there,
    so that CI runs the tiny pipeline once, not once for the tests and once for the gate."""
    folder = os.environ.get("HUBERT_DVC_TINY_RUN")
    if not folder:
        return
    folder = Path(folder)
    shutil.rmtree(folder / "metrics", ignore_errors=True)
    shutil.copytree(clone.root / "metrics", folder / "metrics")
    commit = clone.run("git", "rev-parse", "HEAD").stdout.strip()
    (folder / "commit").write_text(commit + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_exp_clone(tmp_path_factory) -> Clone:
    """The clone after ``dvc exp run -S profile=tiny -n tiny``, its result committed as the
    clone's HEAD (what a user does with an experiment to build on: ``dvc exp apply``, then
    commit), so that later experiments are one parameter away from it."""
    clone = make_clone(tmp_path_factory.mktemp("exp") / "repo")
    clone.dvc("exp", "run", "-S", "profile=tiny", "-n", "tiny")
    share_with_the_ci_gate(clone)
    clone.run("git", "add", "-A")
    clone.run("git", "commit", "-q", "-m", "tiny profile (experiment tiny)")
    return clone


# the parameter the experiments differ in: late and cheap (only finetune@iter1 and evaluate read it)
KEY = "finetune.variants.iter1.max_update"


@pytest.fixture(scope="session")
def tiny_exp_sweep(tiny_exp_clone) -> dict[str, str]:
    """A queued sweep of max_update 35 and 40 from the clean baseline, run by ``dvc queue start``
    and waited for; the log of each (``dvc queue logs``).

    Queued from the baseline's workspace on purpose: a queued experiment starts from the
    workspace as it is when queued (dvc.lock included), so one queued right after another
    ``dvc exp run`` would start from that experiment's checkpoints. Only the stage the key
    feeds is run (``finetune@iter1``; evaluate is the workspace experiment's business)."""
    clone = tiny_exp_clone
    for value in (35, 40):
        clone.dvc("exp", "run", "--queue", "finetune@iter1", "-S", "profile=tiny", "-S", f"{KEY}={value}",
                  "-n", f"q-{value}")
    clone.dvc("queue", "start", "-j", "1")
    deadline = time.monotonic() + 900
    while re.search(r"\b(Queued|Running)\b", status := clone.dvc("queue", "status").stdout):
        assert time.monotonic() < deadline, f"the queue did not finish in 15 min:\n{status}"
        time.sleep(3)
    assert re.search(r"q-35\s.*Success", status) and re.search(r"q-40\s.*Success", status), status
    return {name: clone.dvc("queue", "logs", name).stdout for name in ("q-35", "q-40")}


@pytest.fixture(scope="session")
def tiny_exp_longer(tiny_exp_clone, tiny_exp_sweep) -> str:
    """The output of ``dvc exp run -S profile=tiny -S finetune.variants.iter1.max_update=40 -n iter1-40``
    in the workspace of ``tiny_exp_clone`` (the tiny profile fine-tunes 30 updates), after the sweep."""
    proc = tiny_exp_clone.dvc("exp", "run", "-S", "profile=tiny", "-S", f"{KEY}=40", "-n", "iter1-40")
    return proc.stdout + proc.stderr
