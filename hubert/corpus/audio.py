"""Audio I/O and validation: everything is read with soundfile, checked, downmixed
to mono and resampled to the pipeline rate, or rejected with a reason."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

# Rejection reasons (stable strings: they are metric keys and rejected.jsonl values).
MISSING_AUDIO = "missing_audio"
CORRUPT_AUDIO = "corrupt_audio"
EMPTY_AUDIO = "empty_audio"
TOO_SHORT = "too_short"
NON_FINITE = "non_finite"


class AudioError(ValueError):
    """Audio that cannot enter the corpus; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, path: str | Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.reason = reason
        self.path = str(path)
        self.detail = detail


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read any soundfile-supported file as float32 (num_samples, channels)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(MISSING_AUDIO, path, "audio file does not exist; fix the path or remove the entry")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(CORRUPT_AUDIO, path, f"cannot decode audio ({exc}); re-export it as WAV or FLAC") from exc
    return data, rate


def to_mono_16k(data: np.ndarray, rate: int, target_rate: int, source: str | Path, min_seconds: float) -> np.ndarray:
    """Validate and normalise one waveform (num_samples,) or (num_samples, channels) to mono float32 at target_rate."""
    if data.ndim == 1:
        data = data[:, None]
    if data.shape[0] == 0:
        raise AudioError(EMPTY_AUDIO, source, "audio has no samples; remove the file or re-export it")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(NON_FINITE, source, f"{bad} NaN/Inf samples; re-export the audio from its source")
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != target_rate:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), rate, target_rate).numpy()
    seconds = len(mono) / target_rate
    if seconds < min_seconds:
        raise AudioError(TOO_SHORT, source, f"{seconds:.3f} s is shorter than corpus.min_seconds={min_seconds}")
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def load_mono(path: str | Path, target_rate: int, min_seconds: float = 0.0) -> np.ndarray:
    data, rate = read_audio(path)
    return to_mono_16k(data, rate, target_rate, path, min_seconds)


def usable_in_place(path: str | Path, target_rate: int) -> bool:
    """Whether a (valid) file can be referenced as it is: WAV or FLAC, mono, at the pipeline rate,
    which fairseq and the feature stages read with soundfile."""
    info = sf.info(str(path))
    return info.samplerate == target_rate and info.channels == 1 and info.format in ("WAV", "FLAC")


def file_md5(path: str | Path) -> str:
    """md5 of a file's bytes: what the manifest records of audio it references in place."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def write_wav(path: str | Path, waveform: np.ndarray, rate: int) -> None:
    """Write 16-bit PCM WAV (what fairseq's audio dataset reads fastest)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), waveform, rate, subtype="PCM_16")


def clipped_samples(waveform: np.ndarray) -> int:
    """Samples that are at (or beyond) 16-bit full scale once written by write_wav.

    A few mean the source clipped (or, for synthetic speech, the synthesiser
    saturated): the waveform is flattened there, which no later stage can undo.
    """
    return int(np.count_nonzero(np.abs(waveform) >= 32767 / 32768))
