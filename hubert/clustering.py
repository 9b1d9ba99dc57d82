"""k-means pseudo-labels: fit on a seeded sample of dumped features, assign every
frame of every split with the same model, write fairseq label files.

Settings follow fairseq's examples/hubert/simple_kmeans/learn_kmeans.py
(MiniBatchKMeans, k-means++, max_iter 100, batch 10000, tol 0,
max_no_improvement 100, n_init 20, reassignment_ratio 0, compute_labels
False) plus what the recipe leaves out: a real ``random_state`` and a seeded
numpy Generator for the sample, so the same seed gives the same labels.

Features are read in fairseq's layout (``{split}_{rank}_{nshard}.npy`` +
``.len``, see :mod:`hubert.features`), memory-mapped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hubert.features import FeatureConfig, shard_paths, usable_cpus


@dataclass(frozen=True)
class KMeansConfig:
    """``labels.<iteration>.kmeans`` in params.yaml.

    n_clusters: K. percent: fraction of train manifest lines (utterances, with
    the balanced list's repeats) whose frames fit the model; -1 = all (fairseq's
    convention). seed: sample and MiniBatchKMeans random_state. The rest are
    MiniBatchKMeans arguments with fairseq's values as defaults.
    """

    n_clusters: int = 100
    percent: float = 0.1
    seed: int = 0
    init: str = "k-means++"
    max_iter: int = 100
    batch_size: int = 10000
    tol: float = 0.0
    max_no_improvement: int = 100
    n_init: int = 20
    reassignment_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.n_clusters < 2:
            raise ValueError(f"kmeans.n_clusters={self.n_clusters} must be >= 2")
        if not (self.percent == -1 or 0.0 < self.percent <= 1.0):
            raise ValueError(f"kmeans.percent={self.percent} must be in (0, 1], or -1 for all frames")


@dataclass(frozen=True)
class LabelsIteration:
    """``labels.<iteration>`` in params.yaml: the features to cluster and the k-means settings."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)


def iteration_config(labels: dict, iteration: str) -> LabelsIteration:
    """``labels.<iteration>`` (iter1, iter2) of the params ``labels`` section, strictly parsed."""
    from hubert.params import from_dict

    if iteration not in labels:
        raise KeyError(f"no labels.{iteration} in params (have {sorted(labels)})")
    return from_dict(LabelsIteration, labels[iteration], f"labels.{iteration}")


# ---------------------------------------------------------------- reading features
_SHARD = re.compile(r"^(?P<split>.+)_(?P<rank>\d+)_(?P<nshard>\d+)\.npy$")


def split_nshard(feat_dir: str | Path, split: str) -> int:
    """The nshard of ``split``'s dumped shards; all ranks must be present, one nshard only."""
    feat_dir = Path(feat_dir)
    found: dict[int, set[int]] = {}
    for p in feat_dir.glob(f"{split}_*_*.npy"):
        m = _SHARD.match(p.name)
        if m and m["split"] == split:
            found.setdefault(int(m["nshard"]), set()).add(int(m["rank"]))
    if not found:
        raise FileNotFoundError(f"{feat_dir}: no {split}_<rank>_<nshard>.npy features; run the features stage "
                                f"with {split} in features.splits")
    if len(found) > 1:
        raise ValueError(f"{feat_dir}: {split} shards from several nshard values {sorted(found)} (stale files); "
                         "delete the folder and re-run the features stage")
    nshard, ranks = next(iter(found.items()))
    missing = sorted(set(range(nshard)) - ranks)
    if missing:
        raise FileNotFoundError(f"{feat_dir}: {split} shard(s) {missing} of {nshard} missing; "
                                "re-run the features stage")
    return nshard


def read_lengths(path: str | Path) -> list[int]:
    return [int(x) for x in Path(path).read_text(encoding="utf-8").split()]


def iter_shards(feat_dir: str | Path, split: str) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Yield (memory-mapped (frames, dim) float32, frames per utterance) per shard in rank order."""
    nshard = split_nshard(feat_dir, split)
    for rank in range(nshard):
        npy, lens = shard_paths(feat_dir, split, rank, nshard)
        if not lens.is_file():
            raise FileNotFoundError(f"{lens} missing beside {npy.name}; re-run the features stage")
        feats = np.load(npy, mmap_mode="r")
        lengths = read_lengths(lens)
        if feats.ndim != 2 or feats.shape[0] != sum(lengths):
            raise ValueError(f"{npy}: {feats.shape} features but {lens.name} sums to {sum(lengths)} frames; "
                             "the shard is truncated or stale: re-run the features stage")
        yield feats, lengths


def split_lengths(feat_dir: str | Path, split: str) -> list[int]:
    """Frames per manifest line of ``split``, shards concatenated in rank order."""
    nshard = split_nshard(feat_dir, split)
    return [n for rank in range(nshard) for n in read_lengths(shard_paths(feat_dir, split, rank, nshard)[1])]


def sample_lines(n_lines: int, percent: float, seed: int) -> np.ndarray:
    """Sorted line indices: ceil(n_lines * percent) drawn without replacement (all when percent == -1).

    Drawn over the whole split, not per shard as fairseq does, so the sample
    (and the labels) do not depend on nshard.
    """
    if percent == -1:
        return np.arange(n_lines)
    k = int(np.ceil(n_lines * percent))
    return np.sort(np.random.default_rng(seed).choice(n_lines, size=k, replace=False))


def load_sample(feat_dir: str | Path, split: str, percent: float, seed: int) -> np.ndarray:
    """The frames of :func:`sample_lines`'s utterances, (frames, dim) float32."""
    lengths = split_lengths(feat_dir, split)
    chosen = set(sample_lines(len(lengths), percent, seed).tolist())
    parts, line = [], 0
    for feats, lens in iter_shards(feat_dir, split):
        offset = 0
        for n in lens:
            if line in chosen:
                parts.append(np.asarray(feats[offset: offset + n]))
            offset += n
            line += 1
    return np.concatenate(parts, axis=0)


# ---------------------------------------------------------------- fit and assign
def fit_kmeans(feats: np.ndarray, cfg: KMeansConfig):
    """sklearn MiniBatchKMeans with fairseq's settings and random_state=cfg.seed, fitted on (frames, dim)."""
    from sklearn.cluster import MiniBatchKMeans

    if len(feats) < cfg.n_clusters:
        raise ValueError(f"{len(feats)} sampled frames for K={cfg.n_clusters} clusters; raise kmeans.percent "
                         "or lower kmeans.n_clusters")
    km = MiniBatchKMeans(n_clusters=cfg.n_clusters, init=cfg.init, max_iter=cfg.max_iter, batch_size=cfg.batch_size,
                         tol=cfg.tol, max_no_improvement=cfg.max_no_improvement, n_init=cfg.n_init,
                         reassignment_ratio=cfg.reassignment_ratio, compute_labels=False, init_size=None,
                         random_state=cfg.seed, verbose=0)
    return km.fit(feats)


class Assigner:
    """Nearest centroid by |x|^2 - 2 x.C + |C|^2, as matrix products over blocks of frames.

    centroids: (K, dim). ``__call__(feats (frames, dim)) -> (labels (frames,)
    int64, squared distances (frames,) float32)``. |x|^2 is the same for every
    centroid, so the argmin is taken over |C|^2 - 2 x.C (one addmm per block)
    and |x|^2 added to the winner only. Blocks of 8192 frames keep the
    (block, K) table in cache; they run on ``threads`` Python threads with
    torch pinned to one thread each: torch's own intra-op threads meet at a
    barrier after every small op, which made assignment 15x slower whenever
    another process held a core of this 2-core machine (measured).
    """

    def __init__(self, centroids: np.ndarray, block_frames: int = 8192, threads: int | None = None) -> None:
        import torch

        c = torch.as_tensor(np.asarray(centroids, dtype=np.float32))  # (K, dim)
        self.minus_2c_t = (-2.0 * c).T.contiguous()  # (dim, K)
        self.c_norm = (c * c).sum(1)  # (K,)
        self.block_frames = block_frames
        self.threads = threads or usable_cpus()

    @property
    def n_clusters(self) -> int:
        return self.minus_2c_t.shape[1]

    def _block(self, feats: np.ndarray, s: int, labels, dists) -> None:
        import torch

        x = torch.from_numpy(np.array(feats[s: s + self.block_frames], dtype=np.float32))  # (block, dim), a copy
        with torch.inference_mode():  # thread-local: set in the worker thread itself
            best, lab = torch.addmm(self.c_norm, x, self.minus_2c_t).min(1)  # over (block, K)
            labels[s: s + len(x)] = lab
            # a frame on its centroid can come out slightly negative by rounding
            dists[s: s + len(x)] = (best + (x * x).sum(1)).clamp_(min=0.0)

    def __call__(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from concurrent.futures import ThreadPoolExecutor

        import torch

        if feats.ndim != 2 or feats.shape[1] != self.minus_2c_t.shape[0]:
            raise ValueError(f"features of shape {feats.shape} for centroids of dim {self.minus_2c_t.shape[0]}")
        labels = torch.empty(len(feats), dtype=torch.int64)
        dists = torch.empty(len(feats), dtype=torch.float32)
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(self.threads) as pool:
                list(pool.map(lambda s: self._block(feats, s, labels, dists), range(0, len(feats), self.block_frames)))
        finally:
            torch.set_num_threads(previous)
        return labels.numpy(), dists.numpy()


@dataclass
class SplitLabels:
    """Per manifest line, the unit sequence (frames,) int32; plus the summed squared distance."""

    labels: list[np.ndarray]
    sq_dist_sum: float

    @property
    def frames(self) -> int:
        return sum(len(x) for x in self.labels)


def label_split(feat_dir: str | Path, split: str, assign: Assigner, progress: bool = True) -> SplitLabels:
    """Assign every frame of ``split`` (each shard in one batched pass), split back per line."""
    out: list[np.ndarray] = []
    total = 0.0
    nshard = split_nshard(feat_dir, split)
    for feats, lens in tqdm(iter_shards(feat_dir, split), total=nshard, desc=f"label {split}", unit="shard",
                            disable=not progress):
        labels, dists = assign(feats)
        total += float(dists.sum(dtype=np.float64))
        out += np.split(labels.astype(np.int32), np.cumsum(lens)[:-1])  # int32: half the memory of a big split
    return SplitLabels(out, total)


# ---------------------------------------------------------------- files
def _write_whole(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a re-run replaces the file, never appends to it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_km(path: str | Path, labels: list[np.ndarray]) -> None:
    """fairseq label file: one line per manifest line, space-separated ints."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_whole(path, "".join(" ".join(map(str, x.tolist())) + "\n" for x in labels))


def write_dict(path: str | Path, counts: np.ndarray) -> None:
    """dict.km.txt: K lines ``unit count`` (fairseq Dictionary format), units 0..K-1, all of them,
    including any that no frame uses; the file is rewritten whole on every run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_whole(path, "".join(f"{i} {int(c)}\n" for i, c in enumerate(counts)))


def unit_counts(labels: list[np.ndarray], n_clusters: int) -> np.ndarray:
    """(K,) int64 frame counts of each unit."""
    if not labels:
        return np.zeros(n_clusters, dtype=np.int64)
    return np.bincount(np.concatenate(labels), minlength=n_clusters)
