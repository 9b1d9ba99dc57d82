"""k-means pseudo-labels (stages kmeans_iter1 / kmeans_iter2): fit on a seeded
sample of dumped features, assign every frame of every split with the same
model, write fairseq label files, check them and score them.

Settings follow fairseq's examples/hubert/simple_kmeans/learn_kmeans.py
(MiniBatchKMeans, k-means++, max_iter 100, batch 10000, tol 0,
max_no_improvement 100, n_init 20, reassignment_ratio 0, compute_labels
False) plus what the recipe leaves out: a real ``random_state`` and a seeded
numpy Generator for the sample, so the same seed gives the same labels.
Features are read in fairseq's layout (:mod:`hubert.fairseq.formats`),
memory-mapped.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from tqdm import tqdm

from hubert.corpus.records import lookup_utterances
from hubert.fairseq.formats import (
    dict_file,
    distinct_rows,
    dumped_splits,
    iter_shards,
    label_file,
    read_tsv,
    split_lengths,
    split_nshard,
    write_dict,
    write_km,
)
from hubert.labels.checks import check_labels, estimate_frame_rate, write_label_rate
from hubert.labels.params import KMeansConfig
from hubert.labels.quality import UttLabels, bigram_entropy_bits, chance_bits, entropy_bits, label_quality

MODEL_FILE = "kmeans.joblib"
# frames per predict call: bounds the copy sklearn makes of a memory-mapped shard
ASSIGN_BLOCK = 65536


# ---------------------------------------------------------------- sampling
def sample_lines(n_lines: int, percent: float, seed: int) -> np.ndarray:
    """Sorted line indices: ceil(n_lines * percent) drawn without replacement (all when percent == -1).

    Drawn over the whole split, not per shard as fairseq does, so the sample
    (and the labels) do not depend on nshard.
    """
    if percent == -1:
        return np.arange(n_lines)
    k = int(np.ceil(n_lines * percent))
    return np.sort(np.random.default_rng(seed).choice(n_lines, size=k, replace=False))


def load_sample(feat_dir: str | Path, split: str, percent: float, seed: int,
                line_rows: np.ndarray | None = None) -> np.ndarray:
    """The frames of :func:`sample_lines`'s manifest lines, (frames, dim) float32.

    ``line_rows`` maps manifest lines to the feature rows (each distinct utterance
    once, :func:`hubert.fairseq.formats.distinct_rows`); the sample is drawn over
    the lines, so an utterance that a balanced list repeats weighs as often as it
    is repeated. None: one row per line.
    """
    n_rows = len(split_lengths(feat_dir, split))
    line_rows = np.arange(n_rows) if line_rows is None else np.asarray(line_rows)
    chosen = line_rows[sample_lines(len(line_rows), percent, seed)]
    rows: list[np.ndarray | None] = [None] * n_rows
    wanted = set(chosen.tolist())
    row = 0
    for feats, lens in iter_shards(feat_dir, split):
        offset = 0
        for n in lens:
            if row in wanted:
                rows[row] = np.asarray(feats[offset: offset + n], dtype=np.float32)
            offset += n
            row += 1
    return np.concatenate([rows[r] for r in chosen], axis=0)


# ---------------------------------------------------------------- fit and assign
class FaissKMeans:
    """Centroids fitted by faiss, with scikit-learn's ``cluster_centers_`` / ``predict``
    (nearest centroid in L2), so labelling and the saved model do not depend on the
    backend. Pickles as its centroids only (the search index is rebuilt on load)."""

    def __init__(self, centroids: np.ndarray) -> None:
        self.cluster_centers_ = np.ascontiguousarray(centroids, dtype=np.float32)
        self._index = None

    def __getstate__(self) -> dict:
        return {"cluster_centers_": self.cluster_centers_}

    def __setstate__(self, state: dict) -> None:
        self.cluster_centers_, self._index = state["cluster_centers_"], None

    def predict(self, x: np.ndarray) -> np.ndarray:
        import faiss

        if self._index is None:
            self._index = faiss.IndexFlatL2(self.cluster_centers_.shape[1])
            self._index.add(self.cluster_centers_)
        _, nearest = self._index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
        return nearest[:, 0].astype(np.int64)


def fit_faiss(feats: np.ndarray, cfg: KMeansConfig) -> FaissKMeans:
    """faiss.Kmeans on every given frame (no subsampling beyond kmeans.percent), seeded."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a pinned dependency
        raise ImportError("labels.<iteration>.kmeans.backend=faiss needs faiss (pip install faiss-cpu, or "
                          "faiss-gpu on a GPU machine)") from exc
    x = np.ascontiguousarray(feats, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], cfg.n_clusters, niter=cfg.max_iter, nredo=1, seed=cfg.seed, verbose=False,
                      max_points_per_centroid=len(x) // cfg.n_clusters + 1, gpu=faiss.get_num_gpus() > 0)
    km.train(x)
    return FaissKMeans(km.centroids)


def fit_kmeans(feats: np.ndarray, cfg: KMeansConfig):
    """k-means on (frames, dim): sklearn MiniBatchKMeans with fairseq's settings and
    random_state=cfg.seed, or faiss (``cfg.backend``)."""
    if len(feats) < cfg.n_clusters:
        raise ValueError(f"{len(feats)} sampled frames for K={cfg.n_clusters} clusters; raise kmeans.percent "
                         "or lower kmeans.n_clusters")
    if cfg.backend == "faiss":
        return fit_faiss(feats, cfg)
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=cfg.n_clusters, init=cfg.init, max_iter=cfg.max_iter, batch_size=cfg.batch_size,
                         tol=cfg.tol, max_no_improvement=cfg.max_no_improvement, n_init=cfg.n_init,
                         reassignment_ratio=cfg.reassignment_ratio, compute_labels=False, init_size=None,
                         random_state=cfg.seed, verbose=0)
    return km.fit(feats)


def assign(model, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every frame (scikit-learn's predict), in blocks of ASSIGN_BLOCK frames.

    Returns (labels (frames,) int64, squared distance to the assigned centroid
    (frames,) float32)."""
    centroids = np.asarray(model.cluster_centers_, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[1] != centroids.shape[1]:
        raise ValueError(f"features of shape {feats.shape} for centroids of dim {centroids.shape[1]}")
    labels = np.empty(len(feats), dtype=np.int64)
    dists = np.empty(len(feats), dtype=np.float32)
    for s in range(0, len(feats), ASSIGN_BLOCK):
        x = np.asarray(feats[s: s + ASSIGN_BLOCK], dtype=np.float32)
        labels[s: s + len(x)] = model.predict(x)
        dists[s: s + len(x)] = ((x - centroids[labels[s: s + len(x)]]) ** 2).sum(1)
    return labels, dists


@dataclass
class SplitLabels:
    """Per manifest line, the unit sequence (frames,) int32; plus the summed squared distance."""

    labels: list[np.ndarray]
    sq_dist_sum: float

    @property
    def frames(self) -> int:
        return sum(len(x) for x in self.labels)


def label_split(feat_dir: str | Path, split: str, model, progress: bool = True) -> SplitLabels:
    """Assign every frame of ``split``, shard by shard, split back per manifest line."""
    out: list[np.ndarray] = []
    total = 0.0
    nshard = split_nshard(feat_dir, split)
    for feats, lens in tqdm(iter_shards(feat_dir, split), total=nshard, desc=f"label {split}", unit="shard",
                            disable=not progress):
        labels, dists = assign(model, feats)
        total += float(dists.sum(dtype=np.float64))
        out += np.split(labels.astype(np.int32), np.cumsum(lens)[:-1])  # int32: half the memory of a big split
    return SplitLabels(out, total)


def unit_counts(labels: list[np.ndarray], n_clusters: int) -> np.ndarray:
    """(K,) int64 frame counts of each unit."""
    if not labels:
        return np.zeros(n_clusters, dtype=np.int64)
    return np.bincount(np.concatenate(labels), minlength=n_clusters)

def training_splits(feat_dir: str | Path) -> list[str]:
    """Splits with features in feat_dir, train first (it is the one k-means is fitted on)."""
    splits = dumped_splits(feat_dir)
    if "train" not in splits:
        raise FileNotFoundError(f"{feat_dir}: no train features; run the features stage with train in features.splits")
    return ["train"] + [s for s in splits if s != "train"]


def make_labels(cfg: KMeansConfig, features: str | Path, manifests: str | Path, corpus: str | Path,
                out_dir: str | Path, sample_rate: int, progress: bool = True) -> dict:
    """The kmeans stage: fit on the train features, label every dumped split with that
    one model, write ``out_dir`` whole ({split}.km for every manifest line, repeats
    included; valid_<lang>.km beside each valid_<lang>.tsv; dict.km.txt,
    kmeans.joblib, label_rate.json), check the files as pretraining will read them,
    and return the metrics (numbers only): label quality on the valid split, voices
    k-means never saw (:func:`hubert.labels.quality.label_quality`)."""
    features, manifests, out_dir = Path(features), Path(manifests), Path(out_dir)
    splits = training_splits(features)

    # features (one row per distinct utterance) must line up with the manifests before anything is fitted
    rows, line_rows, distinct = {}, {}, {}
    for s in splits:
        rows[s] = read_tsv(manifests / f"{s}.tsv")[1]
        distinct[s], line_rows[s] = distinct_rows(rows[s])
    lengths = {s: split_lengths(features, s) for s in splits}
    for s in splits:
        if len(lengths[s]) != len(distinct[s]):
            raise ValueError(f"{features}: {len(lengths[s])} {s} feature rows but {manifests / s}.tsv has "
                             f"{len(distinct[s])} distinct utterances; the features are stale: re-run the "
                             "features stage")
    rates = {s: estimate_frame_rate(lengths[s], [n for _, n in distinct[s]], sample_rate) for s in splits}
    label_rate = rates["train"]
    if len(set(rates.values())) != 1:
        raise ValueError(f"{features}: splits disagree on the frame rate {rates}; re-run the features stage")

    sample = load_sample(features, "train", cfg.percent, cfg.seed, line_rows["train"])
    print(f"kmeans: fitting K={cfg.n_clusters} on {len(sample)} frames x {sample.shape[1]} dims")
    model = fit_kmeans(sample, cfg)

    if out_dir.exists():
        shutil.rmtree(out_dir)  # labels of splits no longer dumped must not linger
    out_dir.mkdir(parents=True)
    joblib.dump(model, out_dir / MODEL_FILE)
    labelled = {s: label_split(features, s, model, progress) for s in splits}
    per_line = {s: [lab.labels[r] for r in line_rows[s]] for s, lab in labelled.items()}
    for s, labels in per_line.items():
        write_km(label_file(out_dir, s), labels)
    checked = list(splits)
    if "valid" in per_line:
        langs = (manifests / "valid.lang").read_text(encoding="utf-8").split()
        for lang in sorted(set(langs)):
            subset = [x for x, tag in zip(per_line["valid"], langs) if tag == lang]
            write_km(label_file(out_dir, f"valid_{lang}"), subset)
            checked.append(f"valid_{lang}")
    counts = unit_counts(per_line["train"], cfg.n_clusters)
    write_dict(dict_file(out_dir), counts)
    seconds = sum(n for _, n in rows["train"]) / sample_rate
    write_label_rate(out_dir, label_rate, int(sum(len(x) for x in per_line["train"])), seconds)
    for s in checked:  # the files as pretraining will read them
        check_labels(manifests / f"{s}.tsv", label_file(out_dir, s), dict_file(out_dir), label_rate, sample_rate)

    # quality on held-out voices: the valid split's distinct utterances (k-means saw train only)
    scored = "valid" if "valid" in splits else "train"
    records = lookup_utterances(corpus, [rel for rel, _ in distinct[scored]], manifests / f"{scored}.tsv")
    utts = [UttLabels(u.lang, u.alignment, units) for u, units in zip(records, labelled[scored].labels)]
    return {
        "label_rate": label_rate,
        "n_clusters": cfg.n_clusters,
        "fit_frames": int(len(sample)),
        "scored_on_valid": int(scored == "valid"),
        **label_quality(utts, label_rate, cfg.n_clusters, cfg.seed),
        # over train.km as pretraining sees it (repeats included): a model that
        # learned only unit frequencies scores this masked loss, chance is log2(K+4);
        # one that also knew the previous unit, the bigram entropy
        "label_prior_entropy_bits": round(entropy_bits(counts), 4),
        "label_bigram_entropy_bits": round(bigram_entropy_bits(per_line["train"], cfg.n_clusters), 4),
        "chance_bits": round(chance_bits(cfg.n_clusters), 4),
        "units_used_train": int((counts > 0).sum()),
        "inertia_per_frame": {"fit_sample": round(float(assign(model, sample)[1].mean(dtype=np.float64)), 4),
                              **{s: round(lab.sq_dist_sum / lab.frames, 4) for s, lab in labelled.items()}},
    }
