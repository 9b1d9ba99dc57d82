"""The whole pipeline (`dvc repro`, every stage through the report) on a corpus that
comes only from importers and has no alignments: the tiny corpus's audio exported to a
generic manifest, plus the real LibriSpeech clip, referenced in place, with
corpus.synthetic.utterances at 0; and real speech of real lengths from a jsonl
manifest: the clip three times over (35.8 s, with its transcript three times), far
longer than fine-tuning's max_tokens (6.25 s on the tiny profile), and its first
half second (no transcript), shorter than pretraining's min_sample_size (1 s).
Stages that need phones say so and leave those numbers out; the lengths are decided
in the balance stage and counted; nothing fails and nothing valid is lost."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hubert.corpus.records import read_manifest
from hubert.params import compose
from tests.testdata import LIBRI_CLIP

LIBRI_TEXT = ("keep a goin and if you're lucky you'll run plumb into them was the jeering answer as the sleepy cowmen "
              "spurred their ponies on toward camp muttering their disapproval of taking along a bunch of boys on a "
              "cattle drive")

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


def real_lengths(out: Path) -> Path:
    """The clip concatenated three times and cut to its first 0.5 s, as a jsonl manifest (split train)."""
    out.mkdir(parents=True)
    clip, rate = sf.read(LIBRI_CLIP, dtype="float32")
    sf.write(out / "libri_x3.flac", np.concatenate([clip] * 3), rate)
    sf.write(out / "libri_cut.flac", clip[: rate // 2], rate)
    rows = [{"path": "libri_x3.flac", "text": " ".join([LIBRI_TEXT] * 3), "lang": "en", "speaker": "ls6313"},
            {"path": "libri_cut.flac", "lang": "en", "speaker": "ls6313"}]
    manifest = out / "long_and_short.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
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
    lengths = real_lengths(tmp_path / "real_lengths")
    # every train utterance a fine-tuning one: the 35.8 s clip is sure to reach fine-tuning's limit
    overrides = ["profile=tiny", "corpus.synthetic.utterances.en=0", "corpus.synthetic.utterances.zh=0",
                 "balance.finetune_fraction=1.0",
                 f"corpus.imports=[{{format:manifest,root:'{manifest}',copy:false}},"
                 f"{{format:manifest,root:'{lengths}',copy:false,split:train,transcripts:optional}}]"]
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
                  "features_iter2", "kmeans_iter2", "pretrain_iter2", "letters", "finetune@scratch",
                  "finetune@iter1", "finetune@iter2", "finetune@iter2_lid", "finetune@iter2_en",
                  "finetune@iter2_zh", "evaluate", "report"):
        assert f"Running stage '{stage}'" in out, stage

    metrics = {p.stem: json.loads(p.read_text()) for p in (repo / "metrics").glob("*.json")}
    corpus = metrics["corpus"]
    assert corpus["utterances"]["total"] == 57 and corpus["aligned_utterances"] == 0
    assert corpus["audio_in_place"] == 57  # all 16 kHz mono: nothing copied
    assert_lengths_decided_and_counted(repo, metrics, out)
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


def tsv_rows(path: Path) -> list[tuple[str, int]]:
    return [(rel, int(n)) for rel, n in (line.split("\t") for line in path.read_text().splitlines()[1:])]


def assert_lengths_decided_and_counted(repo: Path, metrics: dict, out: str) -> None:
    """The balance stage counted every length beyond a limit; the letters stage left exactly
    those out of fine-tuning; pretraining (fairseq) left out exactly the short ones; nothing else."""
    lengths = metrics["balance"]["lengths"]
    assert (lengths["shortest_s"], lengths["longest_s"]) == (0.5, 35.775)
    assert lengths["limits_s"] == {"finetune_max": 6.25, "finetune_min": 0.285, "pretrain_min": 1.0}
    assert lengths["pretrain_train"]["too_short"] == {"en": 1, "zh": 0}  # the 0.5 s cut
    manifests, letters = repo / "data" / "manifests", repo / "data" / "letters"
    by_split = {s: tsv_rows(manifests / f"{s}.tsv") for s in ("train", "valid", "test", "finetune")}
    every = {rel for rows in by_split.values() for rel, _ in rows}
    assert {"libri_x3.flac", "libri_cut.flac", LIBRI_CLIP.name} <= {Path(rel).name for rel in every}
    assert len({rel for s in ("train", "valid", "test") for rel, _ in by_split[s]}) == 57  # nothing lost
    # fine-tuning: the utterances with a transcript within its limits, no other left out
    for split, key in (("finetune", "finetune"), ("valid", "finetune_valid")):
        texts = (manifests / f"{split}.wrd").read_text().splitlines()
        long = [rel for (rel, n) in by_split[split] if n > 100_000]
        expected = [rel for (rel, n), t in zip(by_split[split], texts) if t and 4560 <= n <= 100_000]
        assert [rel for rel, _ in tsv_rows(letters / f"{split}.tsv")] == expected, split
        assert sum(lengths[key]["too_long"].values()) == len(long), split
        skipped = sum(c["skipped_too_long"] for c in metrics["letters"]["splits"][split].values())
        assert skipped == len([rel for (rel, n), t in zip(by_split[split], texts) if t and n > 100_000]), split
    assert any(Path(rel).name == "libri_x3.flac" for rel, _ in by_split["finetune"])
    assert metrics["letters"]["splits"]["finetune"]["en"]["skipped_too_long"] >= 1
    # the cut has no transcript: pretraining only, never drawn for fine-tuning
    assert not any(Path(rel).name == "libri_cut.flac" for rel, _ in by_split["finetune"])
    assert any(Path(rel).name == "libri_cut.flac" for rel, _ in by_split["train"])
    # the test split is decoded whole, whatever its lengths
    assert len(tsv_rows(letters / "test.tsv")) == len(by_split["test"])
    long_tests = sum(n > 100_000 for _, n in by_split["test"])
    assert sum(lengths["test_decoded_longer_than_max_tokens"].values()) == long_tests
    decoded = (repo / "data" / "eval" / "iter1" / "utterances.jsonl").read_text().splitlines()
    assert sum(json.loads(r)["set"] == "test" for r in decoded) == len(by_split["test"])
    # fairseq's own count of what pretraining left out: the one we counted
    assert re.search(r"max_keep=\S+, min_keep=16000, loaded \d+, skipped 1 short and 0 long", out), \
        re.findall(r"min_keep=.*", out)[:4]
    report = (repo / "data" / "report" / "index.md").read_text()
    assert "left out by balance.length_policy=skip" in report and "1 train and 0 valid utterance(s)" in report
