"""The tiny fine-tuning run the fine-tuning and evaluation tests share (once per session).

A clone laid out as a user's checkout looks to the finetune stage: hubert/ and
stages/ copied, data/corpus linked to the session's tiny corpus, the balance
stage's manifests (root line ``data/corpus``), the iteration-1 checkpoint of
the session's tiny pretraining (:func:`tests._pretrain_fixtures.resumed_run`),
data/letters written by the letters stage, and params.yaml for profile=tiny
with the variants below. Then ``stages/finetune.py`` runs as a subprocess for
``iter1`` (joint en + zh, 30 updates) and ``iter1_zh`` (Mandarin adaptation of
it, 10 updates).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests._pretrain_fixtures import REPO, compose_params, resumed_run

SPLITS = ("finetune", "valid", "test")
# the tiny profile's variants, minus those that need iteration 2, plus a Mandarin adaptation of iter1
VARIANT_OVERRIDES = ["~finetune.variants.iter2", "~finetune.variants.iter2_lid", "~finetune.variants.iter2_en",
                     "~finetune.variants.iter2_zh",
                     "+finetune.variants.iter1_zh={init: finetune/iter1, languages: [zh], max_update: 10}",
                     "evaluate.compare=[[iter1, scratch], [iter1_zh, iter1]]", "evaluate.replicates=200",
                     "evaluate.codeswitch_utterances=6"]


def finetune_args(variant: str, start: str) -> list[str]:
    return ["--params", "params.yaml", "--variant", variant, "--start", start, "--letters", "data/letters",
            "--out", f"data/finetune/{variant}", "--metrics", f"metrics/finetune/{variant}.json",
            "--live", f"dvclive/finetune/{variant}"]


def run_finetune(clone: Path, variant: str, start: str, timeout: float = 300) -> tuple[int, str]:
    """``python stages/finetune.py`` in ``clone`` (one torch thread: tiny runs on a shared machine)."""
    env = dict(os.environ, PYTHONPATH=str(clone), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "stages/finetune.py", *finetune_args(variant, start)], cwd=clone, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return proc.returncode, proc.stdout


def make_finetune_clone(root: Path, corpus: Path, manifests: Path, pretrained: Path,
                        overrides: list[str] | None = None) -> Path:
    from stages import letters as letters_stage

    root.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("hubert", "stages"):
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    data = root / "data"
    (data / "manifests").mkdir(parents=True)
    (data / "corpus").symlink_to(Path(corpus).resolve(), target_is_directory=True)
    for split in SPLITS:
        body = (manifests / f"{split}.tsv").read_text(encoding="utf-8").split("\n", 1)[1]
        (data / "manifests" / f"{split}.tsv").write_text("data/corpus\n" + body, encoding="utf-8")
        for ext in ("wrd", "lang"):
            shutil.copy(manifests / f"{split}.{ext}", data / "manifests" / f"{split}.{ext}")
    (data / "pretrain" / "iter1").mkdir(parents=True)
    shutil.copy(pretrained, data / "pretrain" / "iter1" / "checkpoint.pt")
    (root / "params.yaml").write_text(compose_params(["profile=tiny", *VARIANT_OVERRIDES, *(overrides or [])]),
                                      encoding="utf-8")
    letters_stage.main(["--params", str(root / "params.yaml"), "--manifests", str(data / "manifests"),
                        "--out", str(data / "letters"),
                        "--metrics", str(root / "metrics" / "letters.json")])
    return root


@dataclass(frozen=True)
class FinetuneRun:
    clone: Path
    joint: tuple[int, str]  # (exit code, output) of finetune@iter1
    adapted: tuple[int, str]  # finetune@iter1_zh, continuing it

    def metrics(self, variant: str) -> dict:
        return json.loads((self.clone / "metrics" / "finetune" / f"{variant}.json").read_text(encoding="utf-8"))


_RUNS: dict[str, FinetuneRun] = {}


def finetune_run(tmp_path_factory, corpus: Path, manifests: Path) -> FinetuneRun:
    key = str(tmp_path_factory.getbasetemp())
    if key not in _RUNS:
        pretrained = resumed_run(tmp_path_factory, corpus, manifests).clone / "data" / "pretrain" / "iter1"
        clone = make_finetune_clone(tmp_path_factory.mktemp("finetune") / "repo", corpus, manifests,
                                    pretrained / "checkpoint.pt")
        joint = run_finetune(clone, "iter1", "data/pretrain/iter1/checkpoint.pt")
        adapted = run_finetune(clone, "iter1_zh", "data/finetune/iter1/checkpoint.pt")
        _RUNS[key] = FinetuneRun(clone, joint, adapted)
    return _RUNS[key]
