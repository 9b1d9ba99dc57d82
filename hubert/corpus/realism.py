"""Recording conditions for the built-in corpus: each voice gets its own channel
(three peaking EQ filters, a low-pass and a high-pass: a microphone and its
cable) and its own room (a reverberation tail of its RT60), and each utterance
its own white noise at a drawn signal-to-noise ratio.

espeak's clean, dry speech is easier for MFCC than any recording (k-means of
its MFCCs follows the phones closely), which hides what a trained model's
layers add. Every draw is seeded from the corpus seed, the voice and the
utterance, so the corpus stays deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio


@dataclass(frozen=True)
class RealismConfig:
    """``corpus.synthetic.realism``: off by default. eq_gain_db: the three peaking
    filters' gains are drawn from +-eq_gain_db (centres log-uniform over 200 Hz - 5
    kHz, Q 1); lowpass_hz, highpass_hz, rt60_s (room decay to -60 dB), snr_db
    (white noise against the utterance's RMS): [low, high] ranges, drawn per voice
    (the noise per utterance)."""

    enabled: bool = False
    eq_gain_db: float = 10.0
    lowpass_hz: tuple = (3000.0, 7600.0)
    highpass_hz: tuple = (50.0, 300.0)
    rt60_s: tuple = (0.15, 0.5)
    snr_db: tuple = (10.0, 25.0)

    def __post_init__(self) -> None:
        for name in ("lowpass_hz", "highpass_hz", "rt60_s", "snr_db"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != 2:
                raise ValueError(f"corpus.synthetic.realism.{name}={value!r}: give a range [low, high]")
            low, high = value
            if not 0 <= low <= high:
                raise ValueError(f"corpus.synthetic.realism.{name}={list(getattr(self, name))}: give [low, high] "
                                 "with 0 <= low <= high")
        if self.eq_gain_db < 0:
            raise ValueError(f"corpus.synthetic.realism.eq_gain_db={self.eq_gain_db} must be >= 0")


@dataclass(frozen=True)
class Channel:
    """One voice's recording conditions."""

    eq: tuple[tuple[float, float], ...]  # (centre Hz, gain dB) of each peaking filter
    lowpass_hz: float
    highpass_hz: float
    room: np.ndarray  # impulse response, float32, starts with the direct path (1.0)


def draw_channel(cfg: RealismConfig, rng: np.random.Generator, sample_rate: int) -> Channel:
    centres = np.exp(rng.uniform(np.log(200.0), np.log(5000.0), size=3))
    gains = rng.uniform(-cfg.eq_gain_db, cfg.eq_gain_db, size=3)
    nyquist = sample_rate / 2 * 0.95
    lowpass = min(float(rng.uniform(*cfg.lowpass_hz)), nyquist)
    highpass = float(rng.uniform(*cfg.highpass_hz))
    rt60 = float(rng.uniform(*cfg.rt60_s))
    n = max(1, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    # a diffuse tail: noise whose energy falls by 60 dB over rt60 (amplitude by 1e-3)
    tail = rng.standard_normal(n) * np.exp(-np.log(1000.0) * t / max(rt60, 1e-3)) * 0.1
    tail[0] = 1.0
    return Channel(tuple(zip(centres.tolist(), gains.tolist())), lowpass, highpass, tail.astype(np.float32))


def apply(wav: np.ndarray, sample_rate: int, channel: Channel, snr_db: float,
          rng: np.random.Generator) -> np.ndarray:
    """The voice's channel and room, then white noise at snr_db; the output keeps the
    input's RMS (then its peak is kept below full scale)."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    rms_in = float(x.pow(2).mean().sqrt())
    if rms_in == 0:
        return np.asarray(wav, dtype=np.float32)
    with torch.inference_mode():
        for centre, gain in channel.eq:
            x = torchaudio.functional.equalizer_biquad(x, sample_rate, centre, gain, Q=1.0)
        x = torchaudio.functional.lowpass_biquad(x, sample_rate, channel.lowpass_hz)
        x = torchaudio.functional.highpass_biquad(x, sample_rate, channel.highpass_hz)
        x = torchaudio.functional.fftconvolve(x, torch.from_numpy(channel.room))[: len(wav)]
    y = x.numpy().astype(np.float64)
    y *= rms_in / max(float(np.sqrt((y ** 2).mean())), 1e-12)
    noise = rng.standard_normal(len(y)) * rms_in * 10 ** (-snr_db / 20)
    y = y + noise
    peak = float(np.abs(y).max())
    if peak > 0.89:  # keep headroom, as the synthesiser's own output does
        y *= 0.89 / peak
    return y.astype(np.float32)
