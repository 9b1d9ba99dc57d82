"""Frame features for k-means targets, dumped in fairseq's layout.

Two kinds, one dumping path:

- ``mfcc``: fairseq's iteration-1 recipe (examples/hubert/simple_kmeans):
  Kaldi MFCC (torchaudio.compliance.kaldi.mfcc, use_energy=False, Kaldi
  defaults: 13 ceps, 23 mel bins, 25 ms / 10 ms, povey window, snip_edges,
  dither 0) + delta + delta-delta (torchaudio.functional.compute_deltas),
  no CMVN: (frames, 39) at 100 Hz.
- ``hubert``: layer L (1-based, fairseq's ``output_layer``) of a fairseq
  HuBERT checkpoint at its CNN frame rate (50 Hz for the 320-sample stride),
  the waveform layer-normalised only if the checkpoint's task.normalize, long
  audio cut into chunks of ``chunk_samples``.

Dumping writes ``{split}_{rank}_{nshard}.npy`` (float32, all frames of the
shard's utterances concatenated) and ``.len`` (frames per utterance, one line
per manifest line) for every shard, sharded by fairseq's rule
(:func:`shard_range`), ``workers`` shards at a time on joblib threads with
torch's threads pinned (:func:`dump_split` says why).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

MFCC_RATE = 100.0  # 10 ms frame shift
MFCC_DIM = 39
MFCC_WINDOW = 400  # 25 ms at 16 kHz
KINDS = ("mfcc", "hubert")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class FeatureConfig:
    """``labels.<iteration>.features`` in params.yaml.

    kind: mfcc | hubert. layer: 1-based transformer layer (hubert only, null
    for mfcc). nshard: output shards per split (fairseq's nshard). workers:
    shards dumped at once (torch threads pinned to cores // workers).
    chunk_samples: longest waveform piece one HuBERT forward sees (fairseq's
    max_chunk). device: cpu | cuda (hubert only). max_batch_samples: audio
    samples per extractor call: MFCC runs a group of utterances through one
    Kaldi call (about 320000 = 20 s is fastest on a CPU: larger groups fall
    out of cache), HuBERT pads them into one forward where that is exact
    (:attr:`HubertFeatureReader.batchable`); 0 = one utterance per call.
    splits: manifest splits to dump.
    """

    kind: str = "mfcc"
    layer: int | None = None
    nshard: int = 2
    workers: int = 2
    chunk_samples: int = 1_600_000
    device: str = "cpu"
    max_batch_samples: int = 320_000
    splits: tuple = ("train", "valid")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"features.kind={self.kind!r} must be one of {KINDS}")
        if self.kind == "hubert" and (self.layer is None or self.layer < 1):
            raise ValueError(f"features.layer={self.layer} must be a 1-based transformer layer for kind=hubert")
        if self.kind == "mfcc" and self.layer is not None:
            raise ValueError(f"features.layer={self.layer} is set but kind=mfcc has no layers; set it to null")
        if self.kind == "mfcc" and self.device != "cpu":
            raise ValueError(f"features.device={self.device!r}: the MFCC recipe runs on cpu")
        if self.device not in DEVICES:
            raise ValueError(f"features.device={self.device!r} must be one of {DEVICES}")
        if self.nshard < 1 or self.workers < 1:
            raise ValueError(f"features.nshard={self.nshard} and features.workers={self.workers} must be >= 1")
        if self.chunk_samples < 16000:
            raise ValueError(f"features.chunk_samples={self.chunk_samples} must be at least 1 s (16000)")
        if self.max_batch_samples < 0:
            raise ValueError(f"features.max_batch_samples={self.max_batch_samples} must be >= 0")
        if not self.splits:
            raise ValueError("features.splits is empty; list the manifest splits to dump, e.g. [train, valid]")


def feature_config(labels: dict, iteration: str) -> FeatureConfig:
    """``labels.<iteration>.features`` of the params ``labels`` section, strictly parsed.

    (The kmeans stage parses the whole iteration block with
    hubert.clustering.iteration_config; the features stage reads only its own
    part, so that it depends on nothing else.)
    """
    from hubert.params import from_dict

    if iteration not in labels:
        raise KeyError(f"no labels.{iteration} in params (have {sorted(labels)})")
    return from_dict(FeatureConfig, labels[iteration].get("features"), f"labels.{iteration}.features")


# ---------------------------------------------------------------- manifests and shards
def read_tsv(path: str | Path) -> tuple[str, list[tuple[str, int]]]:
    """fairseq manifest -> (root line, [(relative path, num_samples), ...]) in file order."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{path}: empty manifest; the first line must be the audio root directory")
    rows = []
    for lineno, line in enumerate(lines[1:], 2):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'relative/path<TAB>num_samples', got {line!r}; "
                             "rebuild the manifests with the balance stage")
        rows.append((parts[0], int(parts[1])))
    return lines[0], rows


def shard_range(total: int, nshard: int, rank: int) -> tuple[int, int]:
    """fairseq's rule: shard ``rank`` covers lines [round(N/nshard*rank), round(N/nshard*(rank+1)))."""
    if not 0 <= rank < nshard:
        raise ValueError(f"rank {rank} is outside 0..{nshard - 1}")
    start, end = round(total / nshard * rank), round(total / nshard * (rank + 1))
    if start >= end:
        raise ValueError(f"shard {rank} of {nshard} is empty ({total} lines); lower features.nshard to at most {total}")
    return start, end


def shard_paths(feat_dir: str | Path, split: str, rank: int, nshard: int) -> tuple[Path, Path]:
    stem = Path(feat_dir) / f"{split}_{rank}_{nshard}"
    return stem.with_suffix(".npy"), stem.with_suffix(".len")


def read_waveform(path: str | Path, num_samples: int | None, sample_rate: int) -> np.ndarray:
    """Mono float32 (num_samples,) in [-1, 1], checked against the manifest's rate and length."""
    wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise ValueError(f"{path}: {rate} Hz, expected {sample_rate}; rebuild the corpus (it resamples to 16 kHz)")
    if wav.shape[1] != 1:
        raise ValueError(f"{path}: {wav.shape[1]} channels, expected mono; rebuild the corpus (it downmixes)")
    wav = wav[:, 0]
    if num_samples is not None and len(wav) != num_samples:
        raise ValueError(f"{path}: {len(wav)} samples but the manifest says {num_samples}; "
                         "the manifest is stale: re-run the balance stage")
    return wav


# ---------------------------------------------------------------- MFCC
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
    """:func:`mfcc` / :func:`mfcc_batch` behind the extractor interface used by :func:`dump_shard`."""

    kind = "mfcc"
    frame_rate = MFCC_RATE
    dim = MFCC_DIM

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate != 16000:
            # the 400/160-sample window and shift of the recipe are 25/10 ms only at 16 kHz
            raise ValueError(f"the MFCC recipe is defined at 16 kHz, got corpus.sample_rate={sample_rate}")
        self.sample_rate = sample_rate

    def num_frames(self, num_samples: int) -> int:
        return max(0, 1 + (num_samples - MFCC_WINDOW) // MFCC_SHIFT)

    def get_feats(self, waveform: np.ndarray) -> np.ndarray:
        return mfcc(waveform, self.sample_rate)

    def get_feats_batch(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        return mfcc_batch(waveforms, self.sample_rate)


# ---------------------------------------------------------------- HuBERT layers
def _conv_frames(num_samples: int, conv: list[tuple[int, int]]) -> int:
    n = num_samples
    for kernel, stride in conv:
        n = (n - kernel) // stride + 1
        if n <= 0:
            return 0
    return n


class HubertFeatureReader:
    """Layer ``layer`` (1-based) of a fairseq HuBERT checkpoint.

    ``get_feats(waveform (num_samples,)) -> (frames, encoder_embed_dim)``
    float32 at :attr:`frame_rate` (50 Hz for the usual 320-sample CNN stride).
    Loading goes through :func:`hubert.checkpoint.load_hubert` (weights_only
    with fairseq's Dictionary allowed, nothing else).
    """

    kind = "hubert"

    def __init__(self, checkpoint: str | Path, layer: int, device: str = "cpu", chunk_samples: int = 1_600_000,
                 max_batch_samples: int = 0) -> None:
        from hubert.checkpoint import load_hubert

        self.model, self.task_cfg = load_hubert(checkpoint, device)
        n_layers = len(self.model.encoder.layers)
        if not 1 <= layer <= n_layers:
            raise ValueError(f"{checkpoint}: layer {layer} requested but the model has {n_layers} transformer "
                             f"layers; set features.layer to 1..{n_layers}")
        self.layer = layer
        self.device = torch.device(device)
        self.sample_rate = int(self.task_cfg.sample_rate)
        self.normalize = bool(self.task_cfg.normalize)
        self.max_batch_samples = max_batch_samples
        # kernel and stride of each CNN layer, read from the modules (fairseq keeps
        # the spec as a Python string that it eval()s; we do not)
        self.conv = [(blk[0].kernel_size[0], blk[0].stride[0]) for blk in self.model.feature_extractor.conv_layers]
        self.receptive_field = 1
        jump = 1
        for kernel, stride in self.conv:
            self.receptive_field += (kernel - 1) * jump
            jump *= stride
        self.frame_rate = self.sample_rate / jump
        self.dim = int(self.model.encoder.embedding_dim)
        if chunk_samples < self.receptive_field:
            raise ValueError(f"chunk_samples={chunk_samples} is shorter than the CNN's receptive field "
                             f"({self.receptive_field} samples)")
        self.chunk_samples = chunk_samples

    @property
    def batchable(self) -> bool:
        """Whether padded batches give the same features as one utterance at a time.

        fairseq's ``extractor_mode=default`` CNN normalises its first layer over
        time (GroupNorm with one group per channel), so zero padding changes every
        frame of a shorter utterance; ``layer_norm`` mode normalises each frame on
        its own and padded positions are masked in the transformer.
        """
        return not any(isinstance(m, torch.nn.GroupNorm) for m in self.model.feature_extractor.modules())

    def chunks(self, num_samples: int) -> list[tuple[int, int]]:
        """fairseq's chunking ([0, c), [c, 2c), ...), except that a last piece shorter
        than the receptive field (which fairseq's conv would reject) joins the one before."""
        bounds = [(s, min(s + self.chunk_samples, num_samples)) for s in range(0, num_samples, self.chunk_samples)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < self.receptive_field:
            bounds[-2:] = [(bounds[-2][0], num_samples)]
        return bounds

    def num_frames(self, num_samples: int) -> int:
        return sum(_conv_frames(e - s, self.conv) for s, e in self.chunks(num_samples))

    def _prepare(self, waveform: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(waveform), dtype=torch.float32)
        if x.ndim != 1:
            raise ValueError(f"get_feats expects a mono waveform (num_samples,), got shape {tuple(x.shape)}")
        if x.numel() < self.receptive_field:
            raise ValueError(f"waveform of {x.numel()} samples is shorter than the CNN's receptive field "
                             f"({self.receptive_field})")
        x = x.to(self.device)
        if self.normalize:  # the model was trained on layer-normalised waveforms (task.normalize)
            x = torch.nn.functional.layer_norm(x, x.shape)
        return x

    def get_feats(self, waveform: np.ndarray) -> np.ndarray:
        """(num_samples,) -> (frames, dim) float32."""
        x = self._prepare(waveform)
        out = []
        with torch.inference_mode():
            for s, e in self.chunks(x.numel()):
                feats, _ = self.model.extract_features(source=x[s:e].view(1, -1), padding_mask=None, mask=False,
                                                       output_layer=self.layer)
                out.append(feats[0])  # (frames_chunk, dim)
        return torch.cat(out, 0).float().cpu().numpy()

    @property
    def n_layers(self) -> int:
        return len(self.model.encoder.layers)

    def get_feats_all_layers(self, waveform: np.ndarray) -> np.ndarray:
        """(num_samples,) -> (n_layers, frames, dim) float32: every transformer layer from one forward pass.

        ``[l - 1]`` equals :meth:`get_feats` of a reader for layer ``l``
        (whatever ``self.layer`` is). HubertModel.extract_features drops the
        encoder's per-layer outputs (``layer_results``), so its steps run here
        as in :meth:`_run_batch`, up to the last layer, without padding.
        Thread-safe like :meth:`get_feats` (no hooks on the shared model).
        """
        x = self._prepare(waveform)
        m = self.model
        out = []
        with torch.inference_mode():
            for s, e in self.chunks(x.numel()):
                feats = m.forward_features(x[s:e].view(1, -1)).transpose(1, 2)  # (1, frames, channels)
                feats = m.layer_norm(feats)
                if m.post_extract_proj is not None:
                    feats = m.post_extract_proj(feats)
                # layer_results: per layer (output (frames, 1, dim), attention, pre-FFN output)
                _, layer_results = m.encoder(feats, padding_mask=None, layer=self.n_layers - 1)
                if len(layer_results) != self.n_layers:  # layerdrop skips layers in training mode only
                    raise RuntimeError(f"the encoder returned {len(layer_results)} layer results for "
                                       f"{self.n_layers} layers; is the model in eval mode?")
                out.append(torch.stack([r[0][:, 0] for r in layer_results]))  # (n_layers, frames_chunk, dim)
        return torch.cat(out, 1).float().cpu().numpy()

    def get_feats_batch(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        """Many utterances -> list of (frames_i, dim), same values as :meth:`get_feats` each.

        When :attr:`batchable` and max_batch_samples > 0, utterances up to one
        chunk long are padded into batches of at most max_batch_samples padded
        samples (sorted by length to waste little padding); the rest go one by one.
        """
        out: list[np.ndarray | None] = [None] * len(waveforms)
        lengths = [len(w) for w in waveforms]
        single = list(range(len(waveforms)))
        if self.batchable and self.max_batch_samples > 0:
            short = sorted((i for i in single if lengths[i] <= self.chunk_samples), key=lambda i: lengths[i])
            single = [i for i in single if lengths[i] > self.chunk_samples]
            batch: list[int] = []
            for i in short:
                if batch and lengths[i] * (len(batch) + 1) > self.max_batch_samples:
                    self._run_batch(waveforms, batch, out)
                    batch = []
                batch.append(i)
            if batch:
                self._run_batch(waveforms, batch, out)
        for i in single:
            out[i] = self.get_feats(waveforms[i])
        return out  # type: ignore[return-value]

    def _run_batch(self, waveforms: list[np.ndarray], idx: list[int], out: list) -> None:
        xs = [self._prepare(waveforms[i]) for i in idx]
        frames = [self.num_frames(x.numel()) for x in xs]
        source = torch.zeros(len(xs), max(x.numel() for x in xs), device=self.device)  # (batch, samples)
        for b, x in enumerate(xs):
            source[b, : x.numel()] = x
        m = self.model
        with torch.inference_mode():
            # HubertModel.forward(features_only=True) step by step, with an exact frame
            # mask: fairseq derives its mask from the sample mask in blocks of
            # len // frames samples, which leaves frames that straddle the end of a
            # shorter utterance unmasked (features then differ from get_feats)
            feats = m.forward_features(source).transpose(1, 2)  # (batch, frames, channels)
            feats = m.layer_norm(feats)
            if m.post_extract_proj is not None:
                feats = m.post_extract_proj(feats)
            positions = torch.arange(feats.size(1), device=self.device)
            mask = positions[None, :] >= torch.tensor(frames, device=self.device)[:, None]  # (batch, frames)
            x, _ = m.encoder(feats, padding_mask=mask, layer=self.layer - 1)  # (batch, frames, dim)
        for b, i in enumerate(idx):
            out[i] = x[b, : frames[b]].float().cpu().numpy()


class Extractor(Protocol):
    kind: str
    frame_rate: float
    dim: int

    def num_frames(self, num_samples: int) -> int: ...

    def get_feats_batch(self, waveforms: list[np.ndarray]) -> list[np.ndarray]: ...


def make_extractor(cfg: FeatureConfig, sample_rate: int, checkpoint: str | Path | None) -> Extractor:
    if cfg.kind == "mfcc":
        if checkpoint is not None:
            raise ValueError("features.kind=mfcc takes no checkpoint; drop --checkpoint or set kind=hubert")
        return MfccExtractor(sample_rate)
    if checkpoint is None:
        raise ValueError("features.kind=hubert needs --checkpoint (a fairseq HuBERT .pt)")
    reader = HubertFeatureReader(checkpoint, cfg.layer, cfg.device, cfg.chunk_samples, cfg.max_batch_samples)
    if reader.sample_rate != sample_rate:
        raise ValueError(f"{checkpoint}: trained at {reader.sample_rate} Hz but corpus.sample_rate={sample_rate}")
    return reader


# ---------------------------------------------------------------- dumping
def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _groups(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive [i, j) ranges of at most ``limit`` summed size (an item larger than it stands alone)."""
    out, i = [], 0
    while i < len(sizes):
        j, total = i, 0
        while j < len(sizes) and (j == i or total + sizes[j] <= limit):
            total += sizes[j]
            j += 1
        out.append((i, j))
        i = j
    return out


def dump_shard(manifest: str | Path, split: str, rank: int, nshard: int, out_dir: str | Path,
               extractor: Extractor, sample_rate: int, group_samples: int, progress: bool = True) -> list[int]:
    """Write ``{split}_{rank}_{nshard}.npy`` (float32 (frames, dim)) and ``.len``; return frames per line.

    The .npy is preallocated from the manifest's num_samples (each utterance's
    frame count is known in advance), so no shard is held in memory and a
    manifest that disagrees with its audio fails loudly. Utterances go to the
    extractor in groups of about ``group_samples`` samples.
    """
    root, rows = read_tsv(manifest)
    start, end = shard_range(len(rows), nshard, rank)
    rows = rows[start:end]
    expected = [extractor.num_frames(n) for _, n in rows]
    short = [rel for (rel, _), f in zip(rows, expected) if f <= 0]
    if short:
        raise ValueError(f"{manifest}: {len(short)} utterance(s) too short for one feature frame "
                         f"(e.g. {short[0]}); raise corpus.min_seconds")
    npy, lens = shard_paths(out_dir, split, rank, nshard)
    npy.parent.mkdir(parents=True, exist_ok=True)
    feats = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(sum(expected), extractor.dim))
    offset = 0
    with tqdm(total=len(rows), desc=f"{split} {rank}/{nshard}", unit="utt", position=rank,
              disable=not progress) as bar:
        for i, j in _groups([n for _, n in rows], max(group_samples, 1)):
            waves = [read_waveform(os.path.join(root, rel), n, sample_rate) for rel, n in rows[i:j]]
            for (rel, _), want, got in zip(rows[i:j], expected[i:j], extractor.get_feats_batch(waves)):
                if got.shape != (want, extractor.dim):
                    raise RuntimeError(f"{rel}: features {got.shape}, expected ({want}, {extractor.dim})")
                feats[offset: offset + want] = got
                offset += want
            bar.update(j - i)
    feats.flush()
    del feats
    lens.write_text("".join(f"{n}\n" for n in expected), encoding="utf-8")
    return expected


def dump_split(manifest: str | Path, split: str, out_dir: str | Path, cfg: FeatureConfig, sample_rate: int,
               checkpoint: str | Path | None = None, extractor: Extractor | None = None,
               progress: bool = True) -> list[int]:
    """All ``cfg.nshard`` shards of one split, ``cfg.workers`` at a time; returns frames per manifest line.

    Workers are joblib threads sharing one extractor (one model in memory, no
    process start-up: at demo size the whole MFCC dump takes seconds, less than
    starting and importing torch in worker processes). torch's intra-op threads
    are pinned to cores // workers while they run, so the workers do not
    oversubscribe the cores (REFERENCE.md: 3-23x slower when they do); the
    torch calls release the GIL, and grouped extraction leaves little Python
    time per second of audio.
    """
    from joblib import Parallel, delayed

    extractor = extractor or make_extractor(cfg, sample_rate, checkpoint)
    jobs = min(cfg.workers, cfg.nshard)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, usable_cpus() // jobs))
    try:
        results = Parallel(n_jobs=jobs, backend="threading")(
            delayed(dump_shard)(manifest, split, rank, cfg.nshard, out_dir, extractor, sample_rate,
                                cfg.max_batch_samples, progress)
            for rank in range(cfg.nshard))
    finally:
        torch.set_num_threads(previous)
    return [n for lengths in results for n in lengths]
