"""The CI metrics gate (.ci/metrics_gate.py): a metric nudged beyond tolerance fails,
clocks are ignored, a metric on one side only fails."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("metrics_gate", REPO / ".ci" / "metrics_gate.py")
gate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gate)


def write(folder: Path, files: dict[str, dict]) -> Path:
    for name, tree in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(tree), encoding="utf-8")
    return folder


@pytest.fixture
def dirs(tmp_path):
    base = {"eval.json": {"iter1": {"zh": {"cer": {"rate": 0.5}}, "decode_s": 3.0}},
            "finetune/iter1.json": {"loss": {"last": 700.0}, "train_s": 10.0}}
    tolerance = tmp_path / "tolerance.yaml"
    tolerance.write_text(yaml.safe_dump({"abs": 0.0, "rel": 0.0, "ignore": ["decode_s", "train_s"]}))
    return tmp_path, base, tolerance


def run(tmp_path, base, fresh, tolerance, *cpu: str) -> int:
    return gate.main(["--baseline", str(write(tmp_path / "b", base)), "--fresh", str(write(tmp_path / "f", fresh)),
                      "--tolerance", str(tolerance), *cpu])


def test_identical_metrics_pass_and_clocks_are_ignored(dirs, capsys):
    tmp_path, base, tolerance = dirs
    fresh = json.loads(json.dumps(base))
    fresh["eval.json"]["iter1"]["decode_s"] = 99.0
    fresh["finetune/iter1.json"]["train_s"] = 1.0
    assert run(tmp_path, base, fresh, tolerance) == 0
    assert "2 metrics within tolerance" in capsys.readouterr().out


def test_a_nudged_metric_fails_and_is_named(dirs, capsys):
    tmp_path, base, tolerance = dirs
    fresh = json.loads(json.dumps(base))
    fresh["eval.json"]["iter1"]["zh"]["cer"]["rate"] = 0.5001
    assert run(tmp_path, base, fresh, tolerance) == 1
    assert "eval.json:iter1.zh.cer.rate: 0.5 -> 0.5001" in capsys.readouterr().out


def test_a_tolerance_admits_a_small_move_per_metric(dirs):
    tmp_path, base, tolerance = dirs
    fresh = json.loads(json.dumps(base))
    fresh["finetune/iter1.json"]["loss"]["last"] = 700.5
    tolerance.write_text(yaml.safe_dump({"abs": 0.0, "ignore": ["decode_s", "train_s"],
                                         "overrides": {"finetune/iter1.json:loss.last": {"abs": 1.0}}}))
    assert run(tmp_path, base, fresh, tolerance) == 0
    fresh["finetune/iter1.json"]["loss"]["last"] = 702.0
    assert run(tmp_path / "again", base, fresh, tolerance) == 1


def test_a_pattern_admits_a_move_on_one_kind_of_cpu_only(dirs, capsys):
    tmp_path, base, tolerance = dirs
    fresh = json.loads(json.dumps(base))
    fresh["finetune/iter1.json"]["loss"]["last"] = 700.5
    tolerance.write_text(yaml.safe_dump({"abs": 0.0, "ignore": ["decode_s", "train_s"], "per_cpu": {
        "avx2": {"overrides": {"finetune/*.json:loss.*": {"abs": 1.0}}}}}))
    assert run(tmp_path / "avx2", base, fresh, tolerance, "--cpu", "avx2") == 0
    assert run(tmp_path / "avx512", base, fresh, tolerance, "--cpu", "avx512") == 1
    assert run(tmp_path / "none", base, fresh, tolerance) == 1
    # the pattern covers what it names, nothing else
    fresh["eval.json"]["iter1"]["zh"]["cer"]["rate"] = 0.5001
    assert run(tmp_path / "other", base, fresh, tolerance, "--cpu", "avx2") == 1
    assert "eval.json:iter1.zh.cer.rate: 0.5 -> 0.5001" in capsys.readouterr().out


def test_a_metric_on_one_side_only_fails(dirs, capsys):
    tmp_path, base, tolerance = dirs
    fresh = json.loads(json.dumps(base))
    fresh["eval.json"]["iter1"]["en"] = {"wer": {"rate": 0.9}}
    assert run(tmp_path, base, fresh, tolerance) == 1
    assert "eval.json:iter1.en.wer.rate: only in the fresh run" in capsys.readouterr().out


def test_the_committed_tolerance_ignores_only_clocks():
    tolerance = yaml.safe_load((REPO / ".ci" / "tolerance.yaml").read_text())
    assert set(tolerance["ignore"]) <= {"decode_s", "train_s", "s_per_update", "wall_time_s", "audio_s_per_s"}


def test_a_cpu_without_a_baseline_is_told_how_to_make_one(tmp_path):
    # the script as committed, in a stand-in repository whose python reports a CPU kind with no baseline
    (tmp_path / ".ci" / "tiny" / "metrics-avx2").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "tiny_run.sh", tmp_path / ".ci" / "tiny_run.sh")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho NEON\n")
    python.chmod(0o755)
    proc = subprocess.run(["bash", str(tmp_path / ".ci" / "tiny_run.sh")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no tiny baseline for this CPU (neon)" in proc.stderr and "metrics-avx2" in proc.stderr
    assert "make ci-baseline" in proc.stderr and ".ci/tiny/metrics-neon" in proc.stderr
