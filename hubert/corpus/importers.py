"""Importers for real corpora: LibriSpeech, AISHELL-1 and generic manifests
(``corpus.imports`` entries). They only yield candidates; validation is
:func:`hubert.corpus.build.build_corpus`'s."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubert.corpus.alignments import Alignments
from hubert.corpus.records import SPLIT_NAMES, Candidate
from hubert.params import from_dict


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symbolic links followed) under ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _decode_lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield (line number, text, error): undecodable lines are reported, the rest kept."""
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            yield lineno, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield lineno, None, (f"{path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start}); "
                                 "re-save the transcript as UTF-8")


def read_transcripts(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """Read an "ID words..." transcript file (LibriSpeech .trans.txt, AISHELL-1).

    Returns id -> (text, None) or (None, error) for lines that are not UTF-8:
    one bad line costs that utterance only, not the whole file.
    """
    texts: dict[str, tuple[str | None, str | None]] = {}
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        parts = raw.strip().split(None, 1)  # the id is separated by a space or a tab
        if not parts:
            continue
        utt_id, words = parts[0], (parts[1] if len(parts) > 1 else b"")
        key = utt_id.decode("utf-8", errors="replace")
        try:
            texts[key] = (words.decode("utf-8"), None)
        except UnicodeDecodeError as exc:
            texts[key] = (None, f"{path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start}); "
                                "re-save the transcript as UTF-8")
    return texts


def librispeech_candidates(root: str | Path) -> Iterator[Candidate]:
    """LibriSpeech layout: root/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac with
    <speaker>-<chapter>.trans.txt ("ID WORDS ...") beside them, root being one
    subset (dev-clean, ...) or a folder of subsets (root/<subset>/<speaker>/...).
    Language en; the subset is the folder's name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LibriSpeech root {root} does not exist; set corpus.imports[].root")
    texts: dict[str, tuple[str | None, str | None]] = {}
    for trans in sorted(root.rglob("*.trans.txt")):
        texts.update(read_transcripts(trans))
    for flac in sorted(root.rglob("*.flac")):
        text, error = texts.get(flac.stem, (None, None))
        parts = flac.relative_to(root).parts
        subset = parts[-4] if len(parts) >= 4 else root.name
        speaker = parts[-3] if len(parts) >= 3 else "unknown"
        yield Candidate(id=flac.stem, lang="en", speaker=f"ls{speaker}", source=str(flac), text=text,
                        text_error=error, path=flac, outside_root=not inside(flac, root), subset=subset)


def aishell_candidates(root: str | Path, transcript: str | Path) -> Iterator[Candidate]:
    """AISHELL-1 layout: root/wav/<subset>/<speaker>/<ID>.wav (subsets train, dev, test)
    and a transcript file ("ID 字 词 ...", spaces between words). Language zh."""
    root = Path(root)
    transcript = root / transcript
    if not root.is_dir():
        raise FileNotFoundError(f"AISHELL root {root} does not exist; set corpus.imports[].root")
    if not transcript.is_file():
        raise FileNotFoundError(f"AISHELL transcript {transcript} does not exist; set corpus.imports[].transcript")
    texts = read_transcripts(transcript)
    for wav in sorted((root / "wav").rglob("*.wav")):
        text, error = texts.get(wav.stem, (None, None))
        yield Candidate(id=wav.stem, lang="zh", speaker=f"ai{wav.parent.name}", source=str(wav), text=text,
                        text_error=error, path=wav, outside_root=not inside(wav, root), subset=wav.parent.parent.name)


def manifest_candidates(manifest: str | Path) -> Iterator[Candidate]:
    """A generic manifest: TSV with a header (path, text, lang; optional id, speaker,
    split) or JSONL with the same keys. Relative paths are relative to the manifest's
    folder, which is the corpus root: paths that resolve outside it are rejected. A
    missing speaker is "" (unknown: see balance.unknown_speaker_fraction); split is
    the corpus's own name for the utterance's part (mapped like a subset)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} does not exist; "
                                "set corpus.imports[].root to the .tsv/.jsonl file")
    root = manifest.parent
    rows: list[tuple[int, dict[str, Any] | None, str | None]] = []
    if manifest.suffix == ".jsonl":
        for lineno, line, error in _decode_lines(manifest):
            if error:
                rows.append((lineno, None, error))
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.append((lineno, None, f"{manifest}:{lineno}: invalid JSON ({exc.msg}); fix the line"))
                continue
            if isinstance(row, dict):
                rows.append((lineno, row, None))
            else:
                rows.append((lineno, None, f"{manifest}:{lineno}: expected a JSON object with path, text, lang, "
                                           f"got {type(row).__name__}; fix the line"))
    elif manifest.suffix == ".tsv":
        lines = list(_decode_lines(manifest))
        header = (lines[0][1] or "").split("\t") if lines else []
        if "path" not in header:
            raise ValueError(f"{manifest}: the first line must be a header naming the columns path, text, lang "
                             f"(optional: id, speaker), got {header}")
        for lineno, line, error in lines[1:]:
            if error:
                rows.append((lineno, None, error))
                continue
            if not line.strip():
                continue
            rows.append((lineno, dict(zip(header, line.split("\t"))), None))
    else:
        raise ValueError(f"{manifest}: unknown manifest type; use .tsv (with a header) or .jsonl")
    for lineno, row, error in rows:
        if row is None:
            yield Candidate(id=f"{manifest.name}:{lineno}", lang="?", speaker="?", source=f"{manifest}:{lineno}",
                            text=None, text_error=error)
            continue
        rel = str(row.get("path", ""))
        path = (root / rel) if rel else root
        utt_id = str(row.get("id") or Path(rel).stem or f"{manifest.name}:{lineno}")
        text = row.get("text")
        yield Candidate(id=utt_id, lang=str(row.get("lang", "")), speaker=str(row.get("speaker") or ""),
                        source=str(path), text=None if text in (None, "") else str(text), path=path,
                        outside_root=not inside(path, root), subset=str(row["split"]) if row.get("split") else None)


@dataclass(frozen=True)
class ImportSpec:
    """One ``corpus.imports`` entry.

    format: librispeech | aishell | manifest; root: the corpus folder (a manifest:
    the .tsv / .jsonl file); transcript: AISHELL's transcript file, relative to
    root; alignments: a folder of Montreal Forced Aligner TextGrids (one per
    utterance, named after it) or a CTM file, attached by utterance id;
    alignment_tier: the TextGrid tier holding phones; split: the corpus's own
    splits, either one split for the whole import (train | valid | test) or a
    mapping from the corpus's subset names (LibriSpeech dev-clean, AISHELL dev, a
    manifest's split column) to ours, e.g. {train: train, dev: valid, test: test};
    unmapped utterances get the default speaker hold-out; copy: false references
    16 kHz mono audio where it is instead of copying it into the corpus (audio
    that must be converted is still written there); transcripts: required (an
    utterance without one is rejected: a transcript file that lacks a line is
    usually a broken corpus) or optional (untranscribed speech is kept with an
    empty text, for pretraining only: the fine-tuning subset and the scored test
    utterances are the transcribed ones).
    """

    format: str = ""
    root: str = ""
    transcript: str | None = None
    alignments: str | None = None
    alignment_tier: str = "phones"
    split: str | dict | None = None
    copy: bool = True
    transcripts: str = "required"

    def __post_init__(self) -> None:
        if self.transcripts not in ("required", "optional"):
            raise ValueError(f"corpus.imports entry for {self.root}: transcripts {self.transcripts!r} is not "
                             "required or optional")
        if self.format not in IMPORTERS:
            raise ValueError(f"corpus.imports entry {self}: format must be one of {sorted(IMPORTERS)}")
        if not self.root:
            raise ValueError(f"corpus.imports entry {self}: root is required")
        names = [self.split] if isinstance(self.split, str) else list((self.split or {}).values())
        bad = [n for n in names if n not in SPLIT_NAMES]
        if bad:
            raise ValueError(f"corpus.imports entry for {self.root}: split {bad[0]!r} is not one of {SPLIT_NAMES} "
                             "(the fine-tuning subset is drawn from train)")

    def split_of(self, subset: str | None) -> str | None:
        if isinstance(self.split, str):
            return self.split
        if isinstance(self.split, dict):
            return self.split.get(subset)
        return None


Importer = Callable[..., Iterator[Candidate]]
IMPORTERS: dict[str, Importer] = {
    "librispeech": lambda spec: librispeech_candidates(spec.root),
    "aishell": lambda spec: aishell_candidates(spec.root, spec.transcript or "transcript/aishell_transcript_v0.8.txt"),
    "manifest": lambda spec: manifest_candidates(spec.root),
}


def import_spec(entry: dict[str, Any]) -> ImportSpec:
    """A ``corpus.imports`` entry, strictly parsed (an unknown key is a typo, not ignored)."""
    return from_dict(ImportSpec, dict(entry), "corpus.imports[]")


def import_candidates(spec: ImportSpec, alignments: Alignments | None = None) -> Iterator[Candidate]:
    """The candidates of one import, with their split, copy mode and alignment (by id).
    A split mapping key that names no subset of the import is reported (a typo would
    otherwise send that subset to the default hold-out)."""
    subsets: set[str | None] = set()
    for c in IMPORTERS[spec.format](spec):
        subsets.add(c.subset)
        c.split = spec.split_of(c.subset)
        c.copy = spec.copy
        c.transcript_optional = spec.transcripts == "optional"
        if alignments is not None and c.id in alignments.by_id:
            c.alignment, c.alignment_source = alignments.by_id[c.id], alignments.source[c.id]
        yield c
    unmatched = sorted(set(spec.split) - subsets) if isinstance(spec.split, dict) else []
    if unmatched:
        print(f"warning: corpus.imports entry for {spec.root}: split names subset(s) {unmatched} that it does not "
              f"have (its subsets: {sorted(str(s) for s in subsets)}); fix the mapping", file=sys.stderr)
