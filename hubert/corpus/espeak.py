"""A small ctypes binding to libespeak-ng (from the espeakng-loader wheel).

We need three things the command-line tool does not give us in one go: the raw
waveform, per-phoneme events with their audio positions (our frame-level phone
alignments), and control over voice, rate and pitch per utterance.

espeak-ng keeps synthesis state in C statics that espeak_Initialize does not
reset (the pitch-flutter phase, the gain control, the echo buffer), so what an
utterance sounds like depends on everything spoken before it in the process.
Each :class:`Espeak` therefore loads its own private copy of the library and
fixes the seed of its noise generator (which espeak_Initialize takes from the
clock): its output depends only on what that engine has spoken, which makes the
corpus a function of its seed, not of the process history or the time of day.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PHONEMES_ASCII = 0  # espeak_TextToPhonemes: phoneme mnemonics as in the phoneme events
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_RAND_SEED = 1
# espeak-ng copies its data path into a fixed 160-byte buffer and exits the
# process when it does not fit: keep a short copy when the venv path is long.
_MAX_DATA_PATH = 150


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Synthesis:
    """One synthesised utterance at espeak's native rate.

    waveform: float32 (num_samples,) in [-1, 1].
    phones: (name, start_seconds) for every phoneme event, in order.
    """

    waveform: np.ndarray
    sample_rate: int
    phones: list[tuple[str, float]]


class EspeakError(RuntimeError):
    pass


def _short_data_path(path: str) -> str:
    if len(path.encode()) <= _MAX_DATA_PATH:
        return path
    target = os.path.join(tempfile.gettempdir(), "hubert-espeak-data")
    if not os.path.isdir(target):
        shutil.copytree(path, target + ".part", dirs_exist_ok=True)
        os.replace(target + ".part", target)
    return target


def _private_library(path: str) -> ctypes.CDLL:
    """Load a fresh instance of the shared library at ``path`` (its own C statics).

    The dynamic loader shares one instance per file, so load a temporary copy;
    the copy can be deleted as soon as it is mapped.
    """
    with tempfile.TemporaryDirectory(prefix="hubert-espeak-") as tmp:
        copy = os.path.join(tmp, os.path.basename(path))
        shutil.copyfile(path, copy)
        return ctypes.CDLL(copy)


class Espeak:
    """Synthesise text with libespeak-ng, collecting audio and phoneme events."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = _private_library(espeakng_loader.get_library_path())
        data = _short_data_path(os.path.dirname(espeakng_loader.get_data_path()))
        self._lib.espeak_Initialize.restype = ctypes.c_int
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed with data path {data!r}")
        self.sample_rate = rate
        # espeak_Initialize seeds the noise generator of breathy voices (variants such as
        # f2, f3) from the clock; a fixed seed makes them repeatable (0 would mean the clock).
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_ng_SetRandSeed(_RAND_SEED)
        self._chunks: list[np.ndarray] = []
        self._phones: list[tuple[str, float]] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = ev.id.string.decode("utf-8", errors="replace")
                self._phones.append((name, ev.audio_position / 1000.0))
            i += 1
        return 0

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int = 50,
                   volume: int = 75) -> Synthesis:
        """Speak ``text`` with ``voice`` (e.g. ``en-us+m3``, ``cmn+f2``).

        rate: words per minute (espeak 80..450); pitch, pitch_range: 0..100; volume: 0..200
        (espeak's default 100 clips a few samples in some voices, hence 75).
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range),
                             (_PARAM_VOLUME, volume)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._phones = [], []
        data = text.encode("utf-8") + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed ({err}) for {text!r}")
        self._lib.espeak_Synchronize()
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Synthesis(pcm.astype(np.float32) / 32768.0, self.sample_rate, list(self._phones))

    def phonemes(self, text: str, voice: str) -> str:
        """espeak's phoneme string for ``text`` (what ``espeak-ng -x`` prints), clauses joined by spaces.

        Unlike the phoneme events it keeps the tone of every Mandarin syllable, as Chao
        tone numbers after the syllable's nucleus (``m'A214`` is 马, tone 3). Translating
        text changes the engine's state: use an engine that does not also synthesise the
        corpus, or its audio would depend on this call.
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice {voice!r}")
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        # espeak advances the pointer clause by clause and sets it to NULL after the last
        remaining = ctypes.c_char_p(text.encode("utf-8") + b"\0")
        clauses = []
        while remaining.value:
            out = self._lib.espeak_TextToPhonemes(ctypes.byref(remaining), _CHARS_UTF8, _PHONEMES_ASCII)
            clauses.append((out or b"").decode("utf-8", errors="replace"))
        return " ".join(c.strip() for c in clauses if c.strip())
