"""Validation and build of the corpus (stage corpus).

Every candidate utterance, synthetic or imported, passes through
:func:`build_corpus`, which writes 16 kHz mono WAV under ``out_dir/audio``
and either a manifest record or a rejection with a reason. Nothing valid is
dropped; the build fails only when nothing usable is left.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hubert.corpus import audio
from hubert.corpus.alignments import AlignmentProblem, fit_to_audio, load_alignments
from hubert.corpus.importers import import_candidates, import_spec, inside
from hubert.corpus.records import Candidate, Rejection, Utterance, write_jsonl
from hubert.corpus.synthetic import SyntheticConfig, phone_intervals, synthetic_candidates
from hubert.corpus.textgen import LANGS, normalize

MISSING_TRANSCRIPT = "missing_transcript"
UNDECODABLE_TRANSCRIPT = "undecodable_transcript"
EMPTY_TRANSCRIPT = "empty_transcript"
DUPLICATE_ID = "duplicate_id"
OUTSIDE_ROOT = "outside_root"
UNKNOWN_LANG = "unknown_lang"
UNKNOWN_SPEAKER = "unknown_speaker"  # audio folder of utterances whose source names no speaker
REASONS = (
    audio.MISSING_AUDIO, audio.CORRUPT_AUDIO, audio.EMPTY_AUDIO, audio.TOO_SHORT, audio.NON_FINITE,
    MISSING_TRANSCRIPT, UNDECODABLE_TRANSCRIPT, EMPTY_TRANSCRIPT, DUPLICATE_ID, OUTSIDE_ROOT, UNKNOWN_LANG,
)


@dataclass(frozen=True)
class CorpusParams:
    """The ``corpus`` section: imports (``corpus.imports`` entries, see
    :func:`hubert.corpus.importers.import_candidates`), the pipeline's sample rate,
    the shortest utterance kept, and the built-in corpus."""

    imports: list = field(default_factory=list)
    sample_rate: int = 16000
    min_seconds: float = 0.5
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


# ---------------------------------------------------------------- validation + build
@dataclass(frozen=True)
class BuildConfig:
    sample_rate: int = 16000
    min_seconds: float = 0.5


def build_corpus(candidates: Iterable[Candidate], out_dir: str | Path, cfg: BuildConfig, progress: bool = True,
                 alignment_problems: list[AlignmentProblem] | None = None) -> tuple[list[Utterance], list[Rejection]]:
    """Validate every candidate, write its 16 kHz mono WAV (or reference it in place),
    return (kept, rejected). An imported alignment that does not fit its audio is
    appended to ``alignment_problems``; the utterance is kept without it."""
    out_dir = Path(out_dir)
    kept: list[Utterance] = []
    rejected: list[Rejection] = []
    seen: dict[str, str] = {}  # kept id -> its source, to name both files of a duplicate

    def reject(c: Candidate, reason: str, detail: str) -> None:
        rejected.append(Rejection(c.id, c.source, reason, detail))

    for c in tqdm(candidates, desc="corpus", unit="utt", disable=not progress):
        if c.id in seen:
            reject(c, DUPLICATE_ID, f"{c.source}: id {c.id} already used by {seen[c.id]}; give ids that are unique")
            continue
        if c.outside_root:
            reject(c, OUTSIDE_ROOT, f"{c.source} resolves outside the corpus root; move the file under the root")
            continue
        # Before the language check: a manifest line that cannot be decoded has no language either.
        if c.text_error:
            reject(c, UNDECODABLE_TRANSCRIPT, c.text_error)
            continue
        if c.lang not in LANGS:
            reject(c, UNKNOWN_LANG, f"{c.source}: language {c.lang!r} is not one of {LANGS}; fix the lang field")
            continue
        rel = Path("audio") / c.lang / (c.speaker or UNKNOWN_SPEAKER) / f"{c.id}.wav"
        if not inside(out_dir / rel, out_dir / "audio"):
            reject(c, OUTSIDE_ROOT, f"{c.source}: id {c.id!r} / speaker {c.speaker!r} would write {rel} outside "
                                    f"the corpus; remove '..' and leading '/' from them")
            continue
        if c.text is None and not c.transcript_optional:
            reject(c, MISSING_TRANSCRIPT, f"{c.source}: no transcript for {c.id}; add it to the transcript file, "
                                          "or set transcripts: optional on its corpus.imports entry to pretrain on it")
            continue
        text = normalize(c.lang, c.text) if c.text is not None else ""
        if not text and c.text is not None:
            reject(c, EMPTY_TRANSCRIPT, f"{c.source}: transcript {c.text!r} has no {c.lang} words after normalisation")
            continue
        try:
            if c.waveform is not None:
                wav = audio.to_mono_16k(c.waveform, c.sample_rate, cfg.sample_rate, c.source, cfg.min_seconds)
            else:
                wav = audio.load_mono(c.path, cfg.sample_rate, cfg.min_seconds)
        except audio.AudioError as exc:
            reject(c, exc.reason, str(exc))
            continue
        seen[c.id] = c.source
        md5 = None
        if not c.copy and c.path is not None and audio.usable_in_place(c.path, cfg.sample_rate):
            path, md5 = os.path.abspath(c.path), audio.file_md5(c.path)
        else:
            path = rel.as_posix()
            audio.write_wav(out_dir / rel, wav, cfg.sample_rate)
        duration = len(wav) / cfg.sample_rate
        alignment = phone_intervals(c.phones, duration) if c.phones is not None else None
        if c.alignment_problem is not None and alignment_problems is not None:
            alignment_problems.append(AlignmentProblem(c.source, c.id, c.alignment_problem))
        if c.alignment is not None:
            try:
                alignment = fit_to_audio(c.alignment, duration)
            except ValueError as exc:
                if alignment_problems is not None:
                    alignment_problems.append(AlignmentProblem(c.alignment_source or c.source, c.id, str(exc)))
        kept.append(Utterance(c.id, c.lang, c.speaker, path, len(wav), text, c.voice, alignment,
                              audio.clipped_samples(wav), c.split, md5))
    return kept, rejected


def corpus_metrics(kept: list[Utterance], rejected: list[Rejection], sample_rate: int,
                   alignment_problems: int = 0) -> dict[str, Any]:
    """Utterances and hours per language, rejected counts by reason (numbers only)."""
    langs = sorted({u.lang for u in kept} | set(LANGS))
    utts = {lang: sum(u.lang == lang for u in kept) for lang in langs}
    hours = {lang: round(sum(u.num_samples for u in kept if u.lang == lang) / sample_rate / 3600, 4) for lang in langs}
    reasons = Counter(r.reason for r in rejected)
    return {
        "utterances": {**utts, "total": len(kept)},
        "hours": {**hours, "total": round(sum(hours.values()), 4)},
        "speakers": {lang: len({u.speaker for u in kept if u.lang == lang}) for lang in langs},
        "aligned_utterances": sum(u.alignment is not None for u in kept),
        "alignment_problems": alignment_problems,
        "audio_in_place": sum(u.audio_md5 is not None for u in kept),
        "clipped": {"utterances": sum(u.clipped_samples > 0 for u in kept),
                    "samples": sum(u.clipped_samples for u in kept)},
        "rejected": {**{r: reasons.get(r, 0) for r in REASONS}, "total": len(rejected)},
    }


class NothingUsable(RuntimeError):
    pass


def check_usable(kept: list[Utterance], rejected: list[Rejection], rejected_path: str | Path) -> None:
    if kept:
        return
    if not rejected:
        raise NothingUsable("the corpus is empty: no synthetic utterances were asked for and no import found any "
                            "audio; set corpus.synthetic.utterances or corpus.imports")
    reasons = ", ".join(f"{k}: {v}" for k, v in Counter(r.reason for r in rejected).most_common())
    raise NothingUsable(f"all {len(rejected)} utterances were rejected ({reasons}); "
                        f"see {rejected_path} for each file and the fix")


@dataclass(frozen=True)
class Built:
    """What the corpus stage made: kept utterances, rejections (with reasons and fixes), and
    imported alignments that were not attached (the utterances are kept without them)."""

    kept: list[Utterance]
    rejected: list[Rejection]
    alignment_problems: list[AlignmentProblem]


ALIGNMENT_PROBLEMS = "alignment_problems.jsonl"


def make_corpus(p: CorpusParams, out_dir: str | Path, progress: bool = True) -> Built:
    """The corpus stage: the built-in corpus and every import, validated and written to
    ``out_dir`` (rebuilt whole: no stale audio from an earlier run) with
    ``manifest.jsonl``, ``rejected.jsonl`` and ``alignment_problems.jsonl``;
    :func:`check_usable` says whether anything usable is left."""
    out_dir = Path(out_dir)
    specs = [import_spec(entry) for entry in p.imports]
    alignments = [load_alignments(s.alignments, s.alignment_tier) if s.alignments else None for s in specs]
    problems = [problem for a in alignments if a is not None for problem in a.problems]
    imported: list[set[str]] = [set() for _ in specs]

    def noting_ids(i: int, candidates: Iterator[Candidate]) -> Iterator[Candidate]:
        for c in candidates:
            imported[i].add(c.id)
            yield c

    sources = [synthetic_candidates(p.synthetic)] + [noting_ids(i, import_candidates(s, a))
                                                    for i, (s, a) in enumerate(zip(specs, alignments))]
    if out_dir.exists():
        shutil.rmtree(out_dir)
    kept, rejected = build_corpus(itertools.chain(*sources), out_dir, BuildConfig(p.sample_rate, p.min_seconds),
                                  progress, problems)
    for a, ids in zip(alignments, imported):
        problems += [AlignmentProblem(a.source[utt_id], utt_id, f"no utterance {utt_id} in this import: the "
                                      "alignment is of another corpus or split (an id is the audio file's name)")
                     for utt_id in sorted(set(a.by_id) - ids)] if a is not None else []
    write_jsonl(out_dir / "manifest.jsonl", (u.to_dict() for u in kept))
    write_jsonl(out_dir / "rejected.jsonl", (r.to_dict() for r in rejected))
    write_jsonl(out_dir / ALIGNMENT_PROBLEMS, (x.to_dict() for x in problems))
    return Built(kept, rejected, problems)


def alignment_warning(built: Built, out_dir: str | Path) -> str | None:
    """A warning naming the first alignment (imported, or of a synthetic utterance) that was not attached, or None."""
    if not built.alignment_problems:
        return None
    first = built.alignment_problems[0]
    return (f"warning: {len(built.alignment_problems)} alignment(s) not attached (first: {first.source}: "
            f"{first.detail}); those utterances are kept without phones, every problem is in "
            f"{Path(out_dir) / ALIGNMENT_PROBLEMS}")


def clipping_warning(kept: list[Utterance], manifest: str | Path) -> str | None:
    """A warning naming the worst clipped utterance and the fix, or None when nothing clipped."""
    clipped = [u for u in kept if u.clipped_samples]
    if not clipped:
        return None
    worst = max(clipped, key=lambda u: u.clipped_samples)
    return (f"warning: {len(clipped)} utterance(s) have {sum(u.clipped_samples for u in clipped)} samples at full "
            f"scale (worst: {worst.id}, {worst.clipped_samples}, voice {worst.voice or worst.speaker}); kept, but "
            "they are distorted: lower corpus.synthetic.volume, or re-export imported audio with headroom "
            f"(clipped_samples per utterance in {manifest})")
