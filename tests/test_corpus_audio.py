"""hubert.corpus.audio: read, validate, downmix, resample, write; every bad kind has its reason."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from hubert.corpus.audio import (
    CORRUPT_AUDIO,
    EMPTY_AUDIO,
    MISSING_AUDIO,
    NON_FINITE,
    TOO_SHORT,
    AudioError,
    load_mono,
    read_audio,
    to_mono_16k,
    write_wav,
)

RATE = 16000


def _assert_rejects(reason, path, fn):
    with pytest.raises(AudioError) as err:
        fn()
    assert err.value.reason == reason
    assert str(path) in str(err.value) and err.value.path == str(path)
    return err.value


def test_audio_error_is_value_error_with_fields():
    err = AudioError(TOO_SHORT, "x.wav", "too short")
    assert isinstance(err, ValueError)
    assert (err.reason, err.path, err.detail, str(err)) == (TOO_SHORT, "x.wav", "too short", "x.wav: too short")


def test_read_audio_shape_and_rate(make_wav, tmp_path):
    path = make_wav(tmp_path / "a.wav", seconds=0.5, rate=22050, channels=2)
    data, rate = read_audio(path)
    assert rate == 22050 and data.shape == (11025, 2) and data.dtype == np.float32


def test_missing_audio(tmp_path):
    path = tmp_path / "nope.wav"
    err = _assert_rejects(MISSING_AUDIO, path, lambda: load_mono(path, RATE))
    assert "does not exist" in str(err)


def test_directory_is_missing_audio(tmp_path):
    path = tmp_path / "dir.wav"
    path.mkdir()
    _assert_rejects(MISSING_AUDIO, path, lambda: read_audio(path))


@pytest.mark.parametrize("name", ["noise.wav", "noise.flac", "zero_bytes.wav"])
def test_corrupt_audio(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("zero") else np.random.default_rng(0).bytes(4000))
    err = _assert_rejects(CORRUPT_AUDIO, path, lambda: load_mono(path, RATE))
    assert "cannot decode" in str(err)


def test_empty_audio(make_wav, tmp_path):
    path = make_wav(tmp_path / "empty.wav", data=np.zeros((0, 1), np.float32))
    assert sf.info(str(path)).frames == 0
    _assert_rejects(EMPTY_AUDIO, path, lambda: load_mono(path, RATE))


def test_too_short_boundary(make_wav, tmp_path):
    short = make_wav(tmp_path / "short.wav", data=np.full(7999, 0.1, np.float32))
    exact = make_wav(tmp_path / "exact.wav", data=np.full(8000, 0.1, np.float32))
    err = _assert_rejects(TOO_SHORT, short, lambda: load_mono(short, RATE, min_seconds=0.5))
    assert "min_seconds=0.5" in str(err)
    assert load_mono(exact, RATE, min_seconds=0.5).shape == (8000,)


def test_too_short_is_judged_after_resampling(make_wav, tmp_path):
    path = make_wav(tmp_path / "short44.wav", seconds=0.45, rate=44100)
    _assert_rejects(TOO_SHORT, path, lambda: load_mono(path, RATE, min_seconds=0.5))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav(make_wav, tmp_path, bad):
    data = np.full(RATE, 0.1, np.float32)
    data[[10, 500]] = bad
    path = make_wav(tmp_path / "nan.wav", data=data, subtype="FLOAT")
    err = _assert_rejects(NON_FINITE, path, lambda: load_mono(path, RATE))
    assert "2 NaN/Inf" in str(err)


def test_multichannel_is_downmixed(make_wav, tmp_path):
    data = np.stack([np.full(RATE, 0.5, np.float32), np.full(RATE, -0.1, np.float32)], axis=1)
    path = make_wav(tmp_path / "stereo.wav", data=data, subtype="FLOAT")
    mono = load_mono(path, RATE)
    assert mono.shape == (RATE,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono, 0.2, atol=1e-6)


@pytest.mark.parametrize("rate, fmt", [(8000, "wav"), (22050, "wav"), (44100, "flac"), (48000, "wav")])
def test_resampled_to_16k_keeps_duration_and_pitch(make_wav, tmp_path, rate, fmt):
    t = np.arange(rate) / rate  # 1 s
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    path = make_wav(tmp_path / f"tone.{fmt}", data=tone, rate=rate)
    mono = load_mono(path, RATE)
    assert mono.shape == (RATE,)
    spectrum = np.abs(np.fft.rfft(mono))
    peak_hz = np.argmax(spectrum) * RATE / len(mono)
    assert abs(peak_hz - 440.0) <= 1.0
    np.testing.assert_allclose(np.sqrt(np.mean(mono[1000:-1000] ** 2)), 0.5 / np.sqrt(2), rtol=0.02)


def test_to_mono_16k_accepts_1d_and_clips():
    data = np.linspace(-1.5, 1.5, RATE, dtype=np.float32)
    mono = to_mono_16k(data, RATE, RATE, "mem", 0.0)
    assert mono.shape == (RATE,) and mono.min() == -1.0 and mono.max() == 1.0
    np.testing.assert_allclose(mono[RATE // 2 - 100: RATE // 2 + 100], data[RATE // 2 - 100: RATE // 2 + 100],
                               atol=1e-7)


def test_in_memory_empty_and_non_finite_name_the_source():
    with pytest.raises(AudioError, match="espeak:x") as err:
        to_mono_16k(np.zeros(0, np.float32), 22050, RATE, "espeak:x", 0.0)
    assert err.value.reason == EMPTY_AUDIO
    with pytest.raises(AudioError) as err:
        to_mono_16k(np.array([0.0, np.nan], np.float32), RATE, RATE, "mem", 0.0)
    assert err.value.reason == NON_FINITE


def test_write_wav_round_trip(tmp_path):
    wav = (0.3 * np.sin(np.arange(RATE) / 10)).astype(np.float32)
    path = tmp_path / "deep" / "dir" / "out.wav"
    write_wav(path, wav, RATE)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (RATE, 1, RATE, "PCM_16")
    back, rate = read_audio(path)
    assert rate == RATE
    np.testing.assert_allclose(back[:, 0], wav, atol=1.0 / 32768 + 1e-7)
