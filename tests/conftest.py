"""Shared fixtures.

Session-scoped pipeline outputs for the tiny profile, built once per test
session in a temporary directory (never in the repository's data/ or
params.yaml):

- ``tiny_params``:    Path to params.yaml composed from params/ with ``profile=tiny``.
- ``tiny_corpus``:    Path to the corpus directory written by ``stages.corpus.main``
                      (audio/**.wav at 16 kHz mono, manifest.jsonl, rejected.jsonl).
- ``tiny_manifests``: Path to the fairseq manifests written by ``stages.balance.main``
                      ({train,valid,test,finetune}.{tsv,lang,wrd}; the tsv root line
                      is the absolute ``tiny_corpus`` path).
- ``tiny_metrics``:   Path to the metrics directory (corpus.json, balance.json).

They are shared by every test in the session: treat them as read-only and copy
what you need to change into ``tmp_path``.

Function-scoped helper:

- ``make_wav``: ``make_wav(path, seconds=1.0, rate=16000, channels=1, subtype="PCM_16",
  data=None) -> Path`` writes a short 220 Hz tone (or ``data``, shape (samples,) or
  (samples, channels)) with soundfile, creating parent folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_params(tiny_workdir: Path) -> Path:
    from hubert.params import compose

    path = tiny_workdir / "params.yaml"
    path.write_text(compose(REPO / "params", ["profile=tiny"]), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_metrics(tiny_workdir: Path) -> Path:
    return tiny_workdir / "metrics"


@pytest.fixture(scope="session")
def tiny_corpus(tiny_params: Path, tiny_workdir: Path, tiny_metrics: Path) -> Path:
    from stages import corpus as corpus_stage

    out = tiny_workdir / "corpus"
    corpus_stage.main(["--params", str(tiny_params), "--out", str(out),
                       "--metrics", str(tiny_metrics / "corpus.json")])
    return out


@pytest.fixture(scope="session")
def tiny_manifests(tiny_params: Path, tiny_corpus: Path, tiny_workdir: Path, tiny_metrics: Path) -> Path:
    from stages import balance as balance_stage

    out = tiny_workdir / "manifests"
    balance_stage.main(["--params", str(tiny_params), "--corpus", str(tiny_corpus), "--out", str(out),
                        "--metrics", str(tiny_metrics / "balance.json")])
    return out


def _write_wav(path: str | Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1,
               subtype: str = "PCM_16", data: np.ndarray | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        t = np.arange(int(round(seconds * rate))) / rate
        tone = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
        data = np.repeat(tone[:, None], channels, axis=1) if channels > 1 else tone
    sf.write(str(path), data, rate, subtype=subtype)
    return path


@pytest.fixture
def make_wav():
    return _write_wav


# training stages print fairseq's records on the console, as fairseq does: tests read them and kill
# runs at a logged update (the default console, progress lines, is tests/test_training_progress.py)
os.environ["HUBERT_DVC_CONSOLE"] = "records"

# a throwaway clone that has run the tiny profile through `dvc exp run` (experiment and remote tests)
from tests._exp_fixtures import tiny_exp_clone, tiny_exp_longer, tiny_exp_sweep  # noqa: E402, F401

# The test modules that share one expensive run per session, each on one pytest-xdist worker
# (`make test` runs `-n 2 --dist loadgroup`): the tiny pipeline through `dvc exp run`
# (tests/_exp_fixtures.py) on one; on the other the tiny pretraining and fine-tuning runs
# (tests/_pretrain_fixtures.py, tests/_finetune_fixtures.py) and the imported-corpus pipeline,
# about as long. Split across workers, each worker would make its own runs.
SHARED_RUNS = {
    "tiny_exp": ("test_exp_workflow.py", "test_export.py", "test_remote_roundtrip.py"),
    "tiny_training": ("test_pretrain_stage.py", "test_resume_exact.py", "test_finetune_stage.py",
                      "test_evaluate_stage.py", "test_interop.py", "test_imported_only_run.py"),
}


def pytest_collection_modifyitems(config, items):
    group_of = {name: group for group, names in SHARED_RUNS.items() for name in names}
    for item in items:
        group = group_of.get(item.path.name)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
