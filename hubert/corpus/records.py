"""Corpus records: ``manifest.jsonl`` lines (:class:`Utterance`), rejections and
candidates before validation, and their JSONL I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPLIT_NAMES = ("train", "valid", "test")
# fields written only when set, so that manifests of corpora that do not use them keep their bytes
OPTIONAL_FIELDS = ("split", "audio_md5")


@dataclass(frozen=True)
class Utterance:
    """One manifest.jsonl line. ``path`` is relative to the corpus directory, or
    absolute for audio referenced in place (then ``audio_md5`` is the md5 of its
    bytes, so that the manifest changes when the audio does); ``alignment`` is
    [[phone, start_s, end_s], ...] or None when unknown; ``split`` is the
    corpus's own split (train, valid, test) or None for the default hold-out;
    ``speaker`` is "" when the source does not say."""

    id: str
    lang: str
    speaker: str
    path: str
    num_samples: int
    text: str
    voice: str | None = None
    alignment: list[list] | None = None
    clipped_samples: int = 0  # samples at 16-bit full scale (clipping in the source or the synthesiser)
    split: str | None = None
    audio_md5: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in OPTIONAL_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Utterance:
        return cls(**data)


@dataclass(frozen=True)
class Rejection:
    id: str
    source: str
    reason: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    """An utterance before validation. Audio comes either from ``path`` (read
    lazily) or in memory (``waveform`` at ``sample_rate``, synthetic corpus).
    ``phones`` are espeak's (name, start) events; ``alignment`` is an imported
    alignment's (phone, start, end) intervals from ``alignment_source``;
    ``subset`` is the corpus's own name for the part the utterance is in
    (LibriSpeech's dev-clean, AISHELL's dev), ``split`` ours (train, valid,
    test); ``copy`` False references 16 kHz mono audio in place;
    ``transcript_optional`` keeps it without a transcript (text "": pretraining
    only) instead of rejecting it."""

    id: str
    lang: str
    speaker: str
    source: str
    text: str | None
    text_error: str | None = None
    path: Path | None = None
    waveform: np.ndarray | None = None
    sample_rate: int | None = None
    phones: list[tuple[str, float]] | None = None
    voice: str | None = None
    outside_root: bool = False
    alignment: list[tuple[str, float, float]] | None = None
    alignment_source: str | None = None
    subset: str | None = None
    split: str | None = None
    copy: bool = True
    # corpus.imports[].transcripts optional: without a transcript it is kept, for pretraining only
    transcript_optional: bool = False
    # why the synthesiser's phones could not become an alignment (the utterance is kept without one)
    alignment_problem: str | None = None


def read_manifest(path: str | Path) -> list[Utterance]:
    with open(path, encoding="utf-8") as f:
        return [Utterance.from_dict(json.loads(line)) for line in f if line.strip()]


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def lookup_utterances(corpus_dir: str | Path, rels: list[str], listed_in: str | Path) -> list[Utterance]:
    """The ``manifest.jsonl`` records of ``rels`` (paths relative to the corpus, as the
    fairseq manifests list them), in order; a path the corpus lacks means stale manifests."""
    by_path = {u.path: u for u in read_manifest(Path(corpus_dir) / "manifest.jsonl")}
    missing = [rel for rel in rels if rel not in by_path]
    if missing:
        raise KeyError(f"{listed_in} lists {missing[0]} ({len(missing)} in all) that {corpus_dir}/manifest.jsonl "
                       "does not have; the manifests are stale: re-run the balance stage")
    return [by_path[rel] for rel in rels]
