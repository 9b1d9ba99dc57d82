"""fairseq's iteration-1 features (examples/hubert/simple_kmeans): Kaldi MFCC
(torchaudio.compliance.kaldi.mfcc, use_energy=False, Kaldi defaults: 13 ceps,
23 mel bins, 25 ms / 10 ms, povey window, snip_edges, dither 0) + delta +
delta-delta (torchaudio.functional.compute_deltas), no CMVN: (frames, 39) at
100 Hz."""

from __future__ import annotations

import numpy as np
import torch

MFCC_RATE = 100.0  # 10 ms frame shift
MFCC_DIM = 39
MFCC_WINDOW = 400  # 25 ms at 16 kHz
MFCC_SHIFT = 160  # 10 ms at 16 kHz


def _check_mono(x: torch.Tensor, min_samples: int, what: str) -> None:
    if x.ndim != 1:
        raise ValueError(f"{what} expects a mono waveform (num_samples,), got shape {tuple(x.shape)}")
    if x.numel() < min_samples:
        raise ValueError(f"{what} needs at least {min_samples} samples (one 25 ms window), got {x.numel()}")


def mfcc(waveform_16k: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """fairseq's iteration-1 features: (num_samples,) float waveform -> (frames, 39) float32 at 100 Hz.

    frames = 1 + (num_samples - 400) // 160 (Kaldi snip_edges); 13 MFCCs then
    their deltas and delta-deltas along time, no CMVN.
    """
    import torchaudio

    x = torch.as_tensor(np.asarray(waveform_16k), dtype=torch.float32)
    _check_mono(x, MFCC_WINDOW, "mfcc")
    with torch.inference_mode():
        ceps = torchaudio.compliance.kaldi.mfcc(x.view(1, -1), sample_frequency=sample_rate, use_energy=False)
        ceps = ceps.T  # (13, frames): compute_deltas works along the last axis
        d1 = torchaudio.functional.compute_deltas(ceps)
        d2 = torchaudio.functional.compute_deltas(d1)
        return torch.cat([ceps, d1, d2], dim=0).T.contiguous().numpy()


def mfcc_batch(waveforms: list[np.ndarray], sample_rate: int = 16000) -> list[np.ndarray]:
    """[mfcc(w) for w in waveforms] with one Kaldi call for the whole group: list of (frames_i, 39).

    About 1.5x faster than :func:`mfcc` per utterance on one core
    (torchaudio's Kaldi MFCC spends much of a short utterance's time in
    per-call overhead), with the same frames: bit for bit for utterances of a
    few frames or more (every utterance of the tiny corpus and the LibriSpeech
    clip in the tests), within 2e-5 for those of 1-4 frames (under 0.05 s),
    where torch multiplies the few rows of the lone call with other kernels. With snip_edges,
    dither 0 and no CMVN every step works on one 25 ms frame alone, so
    utterances laid end to end at multiples of the 10 ms shift keep their
    frames (those straddling two utterances are dropped). The deltas look +-2
    frames along time; they run on a padded batch whose padding repeats each
    utterance's last frame, which is what compute_deltas' replicate padding
    gives one utterance.
    """
    import torchaudio

    if not waveforms:
        return []
    xs = [torch.as_tensor(np.asarray(w), dtype=torch.float32) for w in waveforms]
    for x in xs:
        _check_mono(x, MFCC_WINDOW, "mfcc_batch")
    starts = np.cumsum([0] + [-(-x.numel() // MFCC_SHIFT) * MFCC_SHIFT for x in xs])  # samples, on the 10 ms grid
    frames = [1 + (x.numel() - MFCC_WINDOW) // MFCC_SHIFT for x in xs]
    joined = torch.zeros(int(starts[-1]))
    for start, x in zip(starts, xs):
        joined[start: start + x.numel()] = x
    with torch.inference_mode():
        ceps = torchaudio.compliance.kaldi.mfcc(joined.view(1, -1), sample_frequency=sample_rate, use_energy=False)
        batch = torch.empty(len(xs), max(frames), ceps.shape[1])  # (utterances, frames, 13)
        for i, (start, n) in enumerate(zip(starts, frames)):
            first = int(start) // MFCC_SHIFT
            batch[i, :n] = ceps[first: first + n]
            batch[i, n:] = ceps[first + n - 1]
        batch = batch.transpose(1, 2)  # (utterances, 13, frames)
        d1 = torchaudio.functional.compute_deltas(batch)
        for i, n in enumerate(frames):  # replicate padding for the second pass too
            d1[i, :, n:] = d1[i, :, n - 1: n]
        d2 = torchaudio.functional.compute_deltas(d1)
        out = torch.cat([batch, d1, d2], dim=1).transpose(1, 2)  # (utterances, frames, 39)
        return [out[i, :n].contiguous().numpy() for i, n in enumerate(frames)]


class MfccExtractor:
    """:func:`mfcc_batch` behind the extractor interface of :func:`hubert.labels.features.dump_shard`."""

    frame_rate = MFCC_RATE
    dim = MFCC_DIM

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate != 16000:
            # the 400/160-sample window and shift of the recipe are 25/10 ms only at 16 kHz
            raise ValueError(f"the MFCC recipe is defined at 16 kHz, got corpus.sample_rate={sample_rate}")
        self.sample_rate = sample_rate

    def num_frames(self, num_samples: int) -> int:
        return max(0, 1 + (num_samples - MFCC_WINDOW) // MFCC_SHIFT)

    def get_feats_batch(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        return mfcc_batch(waveforms, self.sample_rate)
