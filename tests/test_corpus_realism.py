"""hubert.corpus.realism: per-voice channel and room, per-utterance noise, seeded; and the
built-in corpus with them on."""

from __future__ import annotations

import numpy as np
import pytest

from hubert.corpus.realism import Channel, RealismConfig, apply, draw_channel
from hubert.corpus.synthetic import SyntheticConfig, synthetic_candidates

RATE = 22050  # espeak's rate: the channel is applied before resampling


def flat(room: np.ndarray | None = None, lowpass: float = 10000.0, highpass: float = 1.0) -> Channel:
    return Channel(eq=((1000.0, 0.0),) * 3, lowpass_hz=lowpass, highpass_hz=highpass,
                   room=np.ones(1, dtype=np.float32) if room is None else room)


def band_energy(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_channels_are_seeded_per_voice():
    cfg = RealismConfig(enabled=True)
    a, b = (draw_channel(cfg, np.random.default_rng([0, 7, 0, k]), RATE) for k in (0, 0))
    assert a.eq == b.eq and np.array_equal(a.room, b.room)
    other = draw_channel(cfg, np.random.default_rng([0, 7, 0, 1]), RATE)
    assert other.eq != a.eq and other.lowpass_hz != a.lowpass_hz
    assert 3000 <= a.lowpass_hz <= 7600 and 50 <= a.highpass_hz <= 300
    assert 0.15 * RATE <= len(a.room) <= 0.5 * RATE and a.room[0] == 1.0
    assert all(abs(gain) <= 10 for _, gain in a.eq)


def test_noise_is_added_at_the_drawn_snr():
    t = np.arange(RATE) / RATE
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    clean = apply(tone, RATE, flat(), 200.0, np.random.default_rng(3))
    noisy = apply(tone, RATE, flat(), 10.0, np.random.default_rng(3))
    noise = noisy.astype(np.float64) - clean
    snr = 10 * np.log10((clean.astype(np.float64) ** 2).mean() / (noise ** 2).mean())
    assert snr == pytest.approx(10.0, abs=0.3)
    assert np.sqrt((clean.astype(np.float64) ** 2).mean()) == pytest.approx(np.sqrt((tone ** 2).mean()), rel=1e-3)


def test_the_low_pass_takes_the_top_off_and_the_room_adds_a_tail():
    white = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.05
    dry = apply(white, RATE, flat(), 200.0, np.random.default_rng(1))
    dull = apply(white, RATE, flat(lowpass=2000.0), 200.0, np.random.default_rng(1))
    ratio_dry = band_energy(dry, 6000, 10000) / band_energy(dry, 200, 1500)
    ratio_dull = band_energy(dull, 6000, 10000) / band_energy(dull, 200, 1500)
    assert ratio_dull < ratio_dry / 20
    click = np.zeros(RATE, dtype=np.float32)
    click[100] = 0.5
    room = draw_channel(RealismConfig(enabled=True, eq_gain_db=0.0, rt60_s=(0.4, 0.4)),
                        np.random.default_rng(2), RATE).room
    wet = apply(click, RATE, flat(room=room), 200.0, np.random.default_rng(1))
    late = slice(100 + int(0.05 * RATE), 100 + int(0.1 * RATE))
    anechoic = apply(click, RATE, flat(), 200.0, np.random.default_rng(1))
    assert np.abs(wet[late]).max() > 1e-3 > np.abs(anechoic[late]).max()


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="realism.snr_db"):
        RealismConfig(snr_db=(25.0, 10.0))
    with pytest.raises(ValueError, match=r"realism.snr_db=20.0: give a range \[low, high\]"):
        RealismConfig(snr_db=20.0)


def test_the_built_in_corpus_with_realism_is_deterministic_and_differs_from_the_dry_one():
    dry = SyntheticConfig(seed=0, utterances={"en": 2, "zh": 1}, speakers={"en": 2, "zh": 1})
    wet = SyntheticConfig(seed=0, utterances={"en": 2, "zh": 1}, speakers={"en": 2, "zh": 1},
                          realism=RealismConfig(enabled=True))
    a, b, c = (list(synthetic_candidates(cfg)) for cfg in (wet, wet, dry))
    for x, y, z in zip(a, b, c):
        assert np.array_equal(x.waveform, y.waveform)
        assert len(x.waveform) == len(z.waveform) and not np.allclose(x.waveform, z.waveform)
        assert x.phones == z.phones and np.abs(x.waveform).max() <= 0.9
