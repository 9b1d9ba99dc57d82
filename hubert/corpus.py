"""The corpus: manifest records, the built-in espeak-ng bilingual corpus, importers
for LibriSpeech / AISHELL-1 / generic manifests, and validation.

Every candidate utterance passes through :func:`build_corpus`, which writes
16 kHz mono WAV under ``out_dir/audio`` and either a manifest record or a
rejection with a reason. Nothing valid is dropped; the build fails only when
nothing usable is left.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from hubert import audio
from hubert.textgen import LANGS, TextGenerator, normalize, read_extra_text

MISSING_TRANSCRIPT = "missing_transcript"
UNDECODABLE_TRANSCRIPT = "undecodable_transcript"
EMPTY_TRANSCRIPT = "empty_transcript"
DUPLICATE_ID = "duplicate_id"
OUTSIDE_ROOT = "outside_root"
UNKNOWN_LANG = "unknown_lang"
REASONS = (
    audio.MISSING_AUDIO, audio.CORRUPT_AUDIO, audio.EMPTY_AUDIO, audio.TOO_SHORT, audio.NON_FINITE,
    MISSING_TRANSCRIPT, UNDECODABLE_TRANSCRIPT, EMPTY_TRANSCRIPT, DUPLICATE_ID, OUTSIDE_ROOT, UNKNOWN_LANG,
)
SILENCE = "sil"


# ---------------------------------------------------------------- records
@dataclass(frozen=True)
class Utterance:
    """One manifest.jsonl line. ``path`` is relative to the corpus directory;
    ``alignment`` is [[phone, start_s, end_s], ...] or None when unknown."""

    id: str
    lang: str
    speaker: str
    path: str
    num_samples: int
    text: str
    voice: str | None = None
    alignment: list[list] | None = None
    clipped_samples: int = 0  # samples at 16-bit full scale (clipping in the source or the synthesiser)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Utterance":
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
    lazily) or in memory (``waveform`` at ``sample_rate``, synthetic corpus)."""

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


def read_manifest(path: str | Path) -> list[Utterance]:
    with open(path, encoding="utf-8") as f:
        return [Utterance.from_dict(json.loads(line)) for line in f if line.strip()]


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- alignment
def phone_intervals(phones: list[tuple[str, float]], duration: float) -> list[list]:
    """espeak phoneme events (name, start) -> [[phone, start, end], ...] covering [0, duration].

    Stress marks are stripped ('E and ,E are one phone), every pause symbol
    becomes ``sil``, zero-length events (syllable boundaries) are dropped and
    adjacent equal phones merge.
    """
    cleaned: list[tuple[str, float]] = []
    for name, start in phones:
        name = name.lstrip("',").strip() or SILENCE
        if name.startswith("_"):
            name = SILENCE
        cleaned.append((name, min(max(start, 0.0), duration)))
    if not cleaned or cleaned[0][1] > 0:
        cleaned.insert(0, (SILENCE, 0.0))
    out: list[list] = []
    for i, (name, start) in enumerate(cleaned):
        end = cleaned[i + 1][1] if i + 1 < len(cleaned) else duration
        if end <= start:
            continue
        if out and out[-1][0] == name:
            out[-1][2] = round(end, 3)
        else:
            out.append([name, round(start, 3), round(end, 3)])
    return out


# ---------------------------------------------------------------- synthetic corpus
# Accents and voice variants that sound like speech (espeak's whisper, robot and
# croak variants are left out). Mandarin has one accent: the variants carry the
# speaker differences.
EN_ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
ZH_ACCENTS = ["cmn"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Andy", "Annie", "Alex", "Lee",
            "adam", "david", "john", "max", "paul", "robert", "linda", "steph", "belinda", "aunty", "edward",
            "ian", "benjamin", "grandpa", "norbert", "shelby", "travis", "victor", "zac", "michel"]


# Peak (of full scale) above which a synthetic utterance is synthesised again, quieter:
# about 1 dB of headroom for the overshoot of resampling espeak's 22.05 kHz to 16 kHz.
PEAK_LIMIT = 0.89


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    utterances: dict = field(default_factory=lambda: {"en": 600, "zh": 600})
    speakers: dict = field(default_factory=lambda: {"en": 20, "zh": 20})
    rate_wpm: tuple = (130, 200)
    pitch: tuple = (20, 80)
    rate_jitter: int = 10
    pitch_jitter: int = 8
    extra_text: str | None = None
    extra_share: float = 0.2
    # Seeded white noise added to every utterance (RMS in dBFS): espeak's pauses
    # are digital zeros, which no microphone records and which give log-mel
    # features a degenerate floor. None turns it off.
    noise_dbfs: float | None = -65.0
    # espeak's volume (0..200). At 75 its loudest variant (paul) saturates
    # 16 bits; an utterance that peaks above PEAK_LIMIT is synthesised again
    # at 2/3 the volume.
    volume: int = 75


@dataclass(frozen=True)
class Speaker:
    id: str
    lang: str
    voice: str
    rate: int
    pitch: int


def synthetic_speakers(cfg: SyntheticConfig) -> list[Speaker]:
    """Distinct voices per language: accent x variant, each with its own rate and pitch."""
    out = []
    for li, lang in enumerate(LANGS):
        rng = random.Random(cfg.seed * 7919 + li)
        accents = EN_ACCENTS if lang == "en" else ZH_ACCENTS
        combos = [(a, v) for a in accents for v in VARIANTS]
        n = int(cfg.speakers.get(lang, 0))
        if n > len(combos):
            raise ValueError(f"corpus.synthetic.speakers.{lang}={n} exceeds the {len(combos)} distinct voices available")
        for k, (accent, variant) in enumerate(rng.sample(combos, n)):
            out.append(Speaker(f"{lang}_spk{k:03d}", lang, f"{accent}+{variant}",
                               rng.randint(*cfg.rate_wpm), rng.randint(*cfg.pitch)))
    return out


def synthetic_candidates(cfg: SyntheticConfig) -> Iterator[Candidate]:
    """Yield synthesised utterances, deterministic from cfg.seed.

    Utterances are dealt to speakers round-robin; each jitters its speaker's
    rate and pitch. One espeak-ng instance per process (it has global state).
    """
    from hubert.espeak import Espeak

    unknown = sorted(set(cfg.utterances) - set(LANGS))
    if unknown:
        raise ValueError(f"corpus.synthetic.utterances: unknown language(s) {unknown}; expected {LANGS}")
    extra = read_extra_text(cfg.extra_text) if cfg.extra_text else []
    speakers = synthetic_speakers(cfg)
    engine = Espeak()
    for li, lang in enumerate(LANGS):
        n = int(cfg.utterances.get(lang, 0))
        voices = [s for s in speakers if s.lang == lang]
        if n and not voices:
            raise ValueError(f"corpus.synthetic.speakers.{lang} must be > 0 when utterances.{lang} > 0")
        text_gen = TextGenerator(cfg.seed * 7919 + 101 + li, extra, cfg.extra_share)
        rng = random.Random(cfg.seed * 7919 + 202 + li)
        for i in range(n):
            spk = voices[i % len(voices)]
            text = text_gen.sentence(lang)
            rate = spk.rate + rng.randint(-cfg.rate_jitter, cfg.rate_jitter)
            pitch = min(99, max(0, spk.pitch + rng.randint(-cfg.pitch_jitter, cfg.pitch_jitter)))
            syn = engine.synthesize(text, spk.voice, rate, pitch, volume=cfg.volume)
            volume = cfg.volume
            while np.abs(syn.waveform).max() > PEAK_LIMIT and volume > 10:
                # espeak saturated, or nearly (its loudest variant, paul, at low pitch), and resampling to
                # 16 kHz overshoots such peaks: say it again quieter rather than keep flattened peaks.
                # Deterministic: same text, voice and engine state order.
                volume = volume * 2 // 3
                syn = engine.synthesize(text, spk.voice, rate, pitch, volume=volume)
            wav = syn.waveform
            if cfg.noise_dbfs is not None:
                noise = np.random.default_rng([cfg.seed, li, i]).standard_normal(len(wav), dtype=np.float32)
                wav = wav + noise * np.float32(10 ** (cfg.noise_dbfs / 20))
            yield Candidate(id=f"{spk.id}_{i:05d}", lang=lang, speaker=spk.id, source=f"espeak:{spk.voice}",
                            text=text, waveform=wav, sample_rate=syn.sample_rate, phones=syn.phones,
                            voice=f"{spk.voice} rate={rate} pitch={pitch}")


# ---------------------------------------------------------------- importers
def _inside(path: Path, root: Path) -> bool:
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
            yield lineno, None, f"{path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start}); re-save the transcript as UTF-8"


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
    <speaker>-<chapter>.trans.txt ("ID WORDS ...") beside them. Language en."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LibriSpeech root {root} does not exist; set corpus.imports[].root")
    texts: dict[str, tuple[str | None, str | None]] = {}
    for trans in sorted(root.rglob("*.trans.txt")):
        texts.update(read_transcripts(trans))
    for flac in sorted(root.rglob("*.flac")):
        text, error = texts.get(flac.stem, (None, None))
        parts = flac.relative_to(root).parts
        speaker = parts[0] if len(parts) > 1 else "unknown"
        yield Candidate(id=flac.stem, lang="en", speaker=f"ls{speaker}", source=str(flac), text=text,
                        text_error=error, path=flac, outside_root=not _inside(flac, root))


def aishell_candidates(root: str | Path, transcript: str | Path) -> Iterator[Candidate]:
    """AISHELL-1 layout: root/wav/<split>/<speaker>/<ID>.wav and a transcript file
    ("ID 字 词 ...", spaces between words). Language zh."""
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
                        text_error=error, path=wav, outside_root=not _inside(wav, root))


def manifest_candidates(manifest: str | Path) -> Iterator[Candidate]:
    """A generic manifest: TSV with a header (path, text, lang; optional id, speaker)
    or JSONL with the same keys. Relative paths are relative to the manifest's folder,
    which is the corpus root: paths that resolve outside it are rejected."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} does not exist; set corpus.imports[].root to the .tsv/.jsonl file")
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
        yield Candidate(id=utt_id, lang=str(row.get("lang", "")), speaker=str(row.get("speaker") or utt_id),
                        source=str(path), text=None if text in (None, "") else str(text), path=path,
                        outside_root=not _inside(path, root))


# ---------------------------------------------------------------- validation + build
@dataclass(frozen=True)
class BuildConfig:
    sample_rate: int = 16000
    min_seconds: float = 0.5


def build_corpus(candidates: Iterable[Candidate], out_dir: str | Path, cfg: BuildConfig,
                 progress: bool = True) -> tuple[list[Utterance], list[Rejection]]:
    """Validate every candidate, write its 16 kHz mono WAV, return (kept, rejected)."""
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
        rel = Path("audio") / c.lang / c.speaker / f"{c.id}.wav"
        if not _inside(out_dir / rel, out_dir / "audio"):
            reject(c, OUTSIDE_ROOT, f"{c.source}: id {c.id!r} / speaker {c.speaker!r} would write {rel} outside "
                                    f"the corpus; remove '..' and leading '/' from them")
            continue
        if c.text is None:
            reject(c, MISSING_TRANSCRIPT, f"{c.source}: no transcript for {c.id}; add it to the transcript file")
            continue
        text = normalize(c.lang, c.text)
        if not text:
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
        audio.write_wav(out_dir / rel, wav, cfg.sample_rate)
        duration = len(wav) / cfg.sample_rate
        alignment = phone_intervals(c.phones, duration) if c.phones is not None else None
        kept.append(Utterance(c.id, c.lang, c.speaker, rel.as_posix(), len(wav), text, c.voice, alignment,
                              audio.clipped_samples(wav)))
    return kept, rejected


def corpus_metrics(kept: list[Utterance], rejected: list[Rejection], sample_rate: int) -> dict[str, Any]:
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


Importer = Callable[..., Iterator[Candidate]]
IMPORTERS: dict[str, Importer] = {
    "librispeech": lambda spec: librispeech_candidates(spec["root"]),
    "aishell": lambda spec: aishell_candidates(spec["root"], spec.get("transcript") or "transcript/aishell_transcript_v0.8.txt"),
    "manifest": lambda spec: manifest_candidates(spec["root"]),
}


def import_candidates(spec: dict[str, Any]) -> Iterator[Candidate]:
    """One corpus.imports entry: {format: librispeech|aishell|manifest, root: ..., transcript: ...}."""
    unknown = sorted(set(spec) - {"format", "root", "transcript"})
    if unknown:
        raise ValueError(f"corpus.imports entry {spec}: unknown key(s) {unknown}; use format, root, transcript")
    fmt = spec.get("format")
    if fmt not in IMPORTERS:
        raise ValueError(f"corpus.imports entry {spec}: format must be one of {sorted(IMPORTERS)}")
    if not spec.get("root"):
        raise ValueError(f"corpus.imports entry {spec}: root is required")
    return IMPORTERS[fmt](spec)
