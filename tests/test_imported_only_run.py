"""The whole pipeline (`dvc repro`, every stage) on a corpus that comes only from an
importer and has no alignments: the tiny corpus's audio exported to a generic
manifest, plus the real LibriSpeech clip, referenced in place, with
corpus.synthetic.utterances at 0. Stages that need phones say so and leave
those numbers out; nothing fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubert.corpus.records import read_manifest
from hubert.params import compose
from tests.testdata import LIBRI_CLIP

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
PIPELINE = ("dvc.yaml", ".dvcignore", ".dvc/config", "params", "hubert", "stages")


def export_manifest(tiny_corpus: Path, out: Path) -> Path:
    """The tiny corpus's audio and transcripts as a user's own corpus: a TSV with a header, no phones."""
    out.mkdir(parents=True)
    rows = []
    for u in read_manifest(tiny_corpus / "manifest.jsonl"):
        shutil.copy(tiny_corpus / u.path, out / f"{u.id}.wav")
        rows.append(f"{u.id}.wav\t{u.text}\t{u.lang}\t{u.speaker}\n")
    shutil.copy(LIBRI_CLIP, out / LIBRI_CLIP.name)
    rows.append(f"{LIBRI_CLIP.name}\tkeep a going and if you're lucky\ten\tls6313\n")
    manifest = out / "corpus.tsv"
    manifest.write_text("path\ttext\tlang\tspeaker\n" + "".join(rows), encoding="utf-8")
    return manifest


def test_imported_corpus_without_alignments_runs_every_stage(tmp_path, tiny_corpus):
    manifest = export_manifest(tiny_corpus, tmp_path / "my_corpus")
    repo = tmp_path / "repo"
    for name in PIPELINE:
        src, dst = REPO / name, repo / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    overrides = ["profile=tiny", "corpus.synthetic.utterances.en=0", "corpus.synthetic.utterances.zh=0",
                 f"corpus.imports=[{{format:manifest,root:'{manifest}',copy:false}}]"]
    (repo / "params.yaml").write_text(compose(REPO / "params", overrides), encoding="utf-8")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    for git in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"]):
        subprocess.run(["git", *git], cwd=repo, check=True)  # a clone has commits (DVCLive reads HEAD)
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for stage in ("corpus", "balance", "features_iter1", "kmeans_iter1", "pretrain_iter1", "layers_iter1",
                  "features_iter2", "kmeans_iter2", "pretrain_iter2"):
        assert f"Running stage '{stage}'" in out, stage

    metrics = {p.stem: json.loads(p.read_text()) for p in (repo / "metrics").glob("*.json")}
    corpus = metrics["corpus"]
    assert corpus["utterances"]["total"] == 55 and corpus["aligned_utterances"] == 0
    assert corpus["audio_in_place"] == 55  # all 16 kHz mono: nothing copied
    assert not list((repo / "data" / "corpus").rglob("*.wav"))
    for it in ("iter1", "iter2"):
        labels = metrics[f"labels_{it}"]
        assert "pnmi_conditional" not in labels and labels["utterances"]["aligned"] == 0
        assert labels["label_prior_entropy_bits"] > 0 and labels["language"]["nmi"] >= 0
    assert "no alignments: PNMI and purities absent" in out
    layers = metrics["layers_iter1"]
    assert layers["aligned_utterances"] == 0 and "best_layer" not in layers and layers["n_layers"] == 2
    assert "no alignments: none of the" in out and "no phone alignments to rank the layers: the middle layer" in out
    for it in ("iter1", "iter2"):
        pretrain = metrics[f"pretrain_{it}"]
        assert pretrain["training"]["updates"] == 40
        # one validation per language beside the whole valid split, as metrics and as curves
        assert {"valid_last", "valid_last_en", "valid_last_zh", "valid_minus_train_bits"} <= set(pretrain["loss_m"])
        assert {"valid_last_en", "valid_last_zh"} <= set(pretrain["accuracy_m"])
        for lang in ("en", "zh"):
            assert (repo / f"dvclive/pretrain_{it}/plots/metrics/valid_{lang}/loss_m.tsv").is_file()
    assert (repo / "data" / "layers_iter1" / "choice.json").is_file()
    assert str(LIBRI_CLIP.name) in (repo / "data" / "manifests" / "train.tsv").read_text() + (
        repo / "data" / "manifests" / "valid.tsv").read_text() + (repo / "data" / "manifests" / "test.tsv").read_text()
