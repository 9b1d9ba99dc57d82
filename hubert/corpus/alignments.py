"""Phone alignments for imported corpora: Praat TextGrids as the Montreal Forced
Aligner writes them (one ``<utterance id>.TextGrid`` per utterance, a ``phones``
tier) and CTM files (``<utterance id> <channel> <start> <duration> <phone>
[<confidence>]`` per line).

An alignment becomes the corpus's ``[[phone, start_s, end_s], ...]`` covering
the whole utterance: silence labels (empty, ``sil``, ``sp``, ``spn``, ``<eps>``)
and the gaps a CTM leaves between phones become ``sil``. A file that cannot be
read, a line that cannot be parsed, or an alignment that does not fit its
audio is reported by file (and line) with the fix; its utterances keep their
audio and transcript, without an alignment. Nothing valid is lost.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SILENCE = "sil"
SILENCE_LABELS = {"", "sil", "sp", "spn", "<eps>", "<sil>", "silence"}
# A tonal phone is ``<phone>/<tone digits>`` (the built-in corpus's Mandarin vowels: ``A/3``);
# the toneless inventory is the part before the separator. Only a final "/" followed by
# digits is a tone: an imported label may contain "/" for other reasons.
TONE_SEP = "/"
_TONAL = re.compile(rf"(.+){re.escape(TONE_SEP)}(\d+)")
# An alignment may end this much after its audio (aligners round to their frame shift).
END_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class AlignmentProblem:
    """One alignment that was not attached: where (file, or file:line), the utterance
    when known, and what to do about it."""

    source: str
    id: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Alignments:
    """Intervals ``(phone, start, end)`` per utterance id, as read, and the problems met reading them."""

    by_id: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)  # id -> the file it came from
    problems: list[AlignmentProblem] = field(default_factory=list)

    def add(self, utt_id: str, intervals: list[tuple[str, float, float]], source: str) -> None:
        if utt_id in self.by_id:
            self.problems.append(AlignmentProblem(source, utt_id, f"a second alignment of {utt_id} (the first is "
                                                  f"in {self.source[utt_id]}); keep one file per utterance"))
            return
        self.by_id[utt_id] = intervals
        self.source[utt_id] = source


def phone_label(label: str) -> str:
    label = label.strip()
    return SILENCE if label.lower() in SILENCE_LABELS else label


def toneless(phone: str) -> str:
    """The phone without its tone (``A/3`` -> ``A``); any other label is returned as it is."""
    tonal = _TONAL.fullmatch(phone)
    return tonal.group(1) if tonal else phone


def is_tonal(phone: str) -> bool:
    return _TONAL.fullmatch(phone) is not None


def read_textgrid(path: Path, tier: str) -> list[tuple[str, float, float]]:
    """The intervals of ``tier`` (praatio reads both of Praat's text formats). Raises ValueError."""
    from praatio import textgrid

    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    except Exception as exc:  # praatio raises several types for malformed files
        raise ValueError(f"not a readable TextGrid ({type(exc).__name__}: {exc}); "
                         "re-export it from the aligner") from exc
    if tier not in grid.tierNames:
        raise ValueError(f"no tier {tier!r} (tiers: {list(grid.tierNames)}); set alignment_tier in the import")
    entries = grid.getTier(tier).entries
    if entries and not hasattr(entries[0], "end"):
        raise ValueError(f"tier {tier!r} is a point tier; phone alignments need an interval tier")
    return [(phone_label(e.label), float(e.start), float(e.end)) for e in entries]


def read_ctm(path: Path, found: Alignments) -> None:
    """Every utterance of a CTM file into ``found``; an utterance with a malformed line is
    reported (with the line) and left out, the others are kept."""
    per_utt: dict[str, list[tuple[str, float, float]]] = {}
    bad: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        found.problems.append(AlignmentProblem(str(path), None, f"cannot be read ({exc}); re-export it as UTF-8"))
        return
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or line.startswith(";;"):
            continue
        where = f"{path}:{lineno}"
        try:
            if len(parts) not in (5, 6):
                raise ValueError(f"{len(parts)} fields")
            start, duration = float(parts[2]), float(parts[3])
            if start < 0 or duration <= 0:
                raise ValueError("negative start or non-positive duration")
        except ValueError as exc:
            bad.setdefault(parts[0], f"{where}: expected '<utterance> <channel> <start> <duration> <phone> "
                                     f"[<confidence>]', got {line!r} ({exc}); fix or remove the line")
            continue
        per_utt.setdefault(parts[0], []).append((phone_label(parts[4]), start, start + duration))
    for utt_id, detail in bad.items():
        found.problems.append(AlignmentProblem(str(path), utt_id, detail))
    for utt_id, intervals in per_utt.items():
        if utt_id not in bad:
            found.add(utt_id, sorted(intervals, key=lambda x: x[1]), str(path))


def load_alignments(source: str | Path, tier: str = "phones") -> Alignments:
    """All alignments under ``source``: a CTM file, a TextGrid file, or a folder searched for
    ``*.TextGrid`` (one per utterance, named after it) and ``*.ctm``."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"alignments {source} do not exist; set corpus.imports[].alignments to a "
                                "folder of TextGrid files or a CTM file")
    files = [source] if source.is_file() else sorted(
        p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in (".textgrid", ".ctm"))
    found = Alignments()
    for path in files:
        if path.suffix.lower() == ".ctm":
            read_ctm(path, found)
            continue
        try:
            found.add(path.stem, read_textgrid(path, tier), str(path))
        except ValueError as exc:
            found.problems.append(AlignmentProblem(str(path), path.stem, f"{path}: {exc}"))
    if not files:
        found.problems.append(AlignmentProblem(str(source), None, f"{source} holds no .TextGrid or .ctm file"))
    return found


def fit_to_audio(intervals: list[tuple[str, float, float]], duration: float) -> list[list]:
    """``[[phone, start, end], ...]`` covering [0, duration]: gaps and the edges become ``sil``,
    adjacent equal labels merge. Raises ValueError when the intervals overlap, are empty,
    or run past the audio by more than END_TOLERANCE_S (an alignment of another file)."""
    if not intervals:
        raise ValueError("the alignment has no interval")
    out: list[list] = []
    t = 0.0
    for phone, start, end in intervals:
        if end <= start:
            raise ValueError(f"interval {phone!r} [{start}, {end}] is empty or reversed")
        if start < t - 1e-6:
            raise ValueError(f"interval {phone!r} at {start} s overlaps the one before (ending at {t} s)")
        if start > duration + END_TOLERANCE_S:
            raise ValueError(f"interval {phone!r} starts at {start} s, after the audio ends ({duration:.3f} s): "
                             "is it the alignment of another recording?")
        if start > t + 1e-6:
            out.append([SILENCE, t, start])
        out.append([phone, start, min(end, duration)])
        t = end
    if t > duration + END_TOLERANCE_S:
        raise ValueError(f"the alignment ends at {t} s but the audio at {duration:.3f} s: is it the alignment of "
                         "another recording?")
    if t < duration:
        out.append([SILENCE, t, duration])
    return merge_intervals(out)


def merge_intervals(intervals: Iterable[Sequence]) -> list[list]:
    """``[[phone, start, end], ...]`` without empty intervals, adjacent equal phones merged,
    times rounded to milliseconds: the corpus's alignment format."""
    merged: list[list] = []
    for phone, start, end in intervals:
        if end <= start:
            continue
        if merged and merged[-1][0] == phone:
            merged[-1][2] = round(end, 3)
        else:
            merged.append([phone, round(start, 3), round(end, 3)])
    return merged
