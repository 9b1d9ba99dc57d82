"""The ``labels`` params section: per iteration the features to cluster and the
k-means settings, and the layer sweep's draw; strict dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from hubert.params import from_dict

KINDS = ("mfcc", "hubert")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float16")
AUTO = "auto"  # features.layer: take the layer sweep's choice


LAUNCHERS = ("local", "submitit")
CLUSTERS = ("auto", "slurm", "local")


@dataclass(frozen=True)
class LauncherConfig:
    """``labels.<iteration>.features.launcher``: where the shards are dumped.

    kind: local (this process, ``workers`` shards at a time) or submitit (one job
    per shard through submitit, so N machines each dump their shards into the
    shared output folder; the kmeans stage reads them unchanged). cluster: slurm,
    local (jobs as local processes) or auto (slurm where submitit finds it, else
    local). folder: submitit's job logs and pickles (on a filesystem the jobs
    share). The rest are the jobs' resources on SLURM: timeout_min,
    slurm_partition, gpus_per_node, cpus_per_task, mem_gb, and array_parallelism
    (shards running at once).
    """

    kind: str = "local"
    cluster: str = "auto"
    folder: str = ".submitit"
    timeout_min: int = 240
    slurm_partition: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 4
    mem_gb: int = 16
    array_parallelism: int = 64

    def __post_init__(self) -> None:
        if self.kind not in LAUNCHERS:
            raise ValueError(f"features.launcher.kind={self.kind!r} must be one of {LAUNCHERS}")
        if self.cluster not in CLUSTERS:
            raise ValueError(f"features.launcher.cluster={self.cluster!r} must be one of {CLUSTERS}")
        if min(self.timeout_min, self.cpus_per_task, self.mem_gb, self.array_parallelism) < 1 or \
                self.gpus_per_node < 0:
            raise ValueError("features.launcher: timeout_min, cpus_per_task, mem_gb and array_parallelism must be "
                             ">= 1, gpus_per_node >= 0")


@dataclass(frozen=True)
class FeatureConfig:
    """``labels.<iteration>.features`` in params.yaml.

    kind: mfcc | hubert. layer: 1-based transformer layer, or auto: the layer
    sweep's choice (hubert only, null for mfcc). nshard: output shards per split (fairseq's nshard). workers:
    shards dumped at once (torch threads pinned to cores // workers).
    chunk_samples: longest waveform piece one HuBERT forward sees (fairseq's
    max_chunk). device: cpu | cuda (hubert only). max_batch_samples: audio
    samples per extractor call: MFCC runs a group of utterances through one
    Kaldi call (about 320000 = 20 s is fastest on a CPU: larger groups fall
    out of cache), HuBERT pads them into one forward where that is exact
    (:attr:`HubertFeatureReader.batchable`); 0 = one utterance per call.
    splits: manifest splits to dump. dtype: float32 | float16, how the .npy
    shards store the features (float16 halves the disk of layer features; k-means
    reads them back as float32). launcher: :class:`LauncherConfig`.
    """

    kind: str = "mfcc"
    layer: int | str | None = None
    nshard: int = 2
    workers: int = 2
    chunk_samples: int = 1_600_000
    device: str = "cpu"
    max_batch_samples: int = 320_000
    splits: tuple = ("train", "valid")
    dtype: str = "float32"
    launcher: LauncherConfig = field(default_factory=LauncherConfig)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"features.kind={self.kind!r} must be one of {KINDS}")
        if self.kind == "hubert" and self.layer != AUTO and not (isinstance(self.layer, int) and self.layer >= 1):
            raise ValueError(f"features.layer={self.layer!r} must be a 1-based transformer layer, or auto (the "
                             "layer sweep's choice), for kind=hubert")
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
        if self.dtype not in DTYPES:
            raise ValueError(f"features.dtype={self.dtype!r} must be one of {DTYPES}")


def feature_config(labels: dict, iteration: str) -> FeatureConfig:
    """``labels.<iteration>.features`` of the params ``labels`` section, strictly parsed.

    (The kmeans stage parses the whole iteration block with
    hubert.labels.kmeans.iteration_config; the features stage reads only its own
    part, so that it depends on nothing else.)
    """
    if iteration not in labels:
        raise KeyError(f"no labels.{iteration} in params (have {sorted(labels)})")
    return from_dict(FeatureConfig, labels[iteration].get("features"), f"labels.{iteration}.features")


KMEANS_BACKENDS = ("sklearn", "faiss")


@dataclass(frozen=True)
class KMeansConfig:
    """``labels.<iteration>.kmeans`` in params.yaml.

    n_clusters: K. percent: fraction of train manifest lines (utterances, with
    the balanced list's repeats) whose frames fit the model; -1 = all (fairseq's
    convention). seed: sample and MiniBatchKMeans random_state. The rest are
    MiniBatchKMeans arguments with fairseq's values as defaults.

    backend: sklearn (fairseq's recipe: MiniBatchKMeans) or faiss (faiss.Kmeans,
    full-batch Lloyd on the same sampled frames, on a GPU when faiss sees one).
    faiss reads n_clusters, max_iter (its niter) and seed; it starts from random
    frames (it has no k-means++) and runs once, so init, batch_size, tol,
    max_no_improvement, n_init and reassignment_ratio are sklearn's only.
    """

    backend: str = "sklearn"
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
        if self.backend not in KMEANS_BACKENDS:
            raise ValueError(f"kmeans.backend={self.backend!r}: use one of {', '.join(KMEANS_BACKENDS)}")
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
    if iteration not in labels:
        raise KeyError(f"no labels.{iteration} in params (have {sorted(labels)})")
    return from_dict(LabelsIteration, labels[iteration], f"labels.{iteration}")


@dataclass(frozen=True)
class SweepConfig:
    """``labels.sweep`` in params.yaml.

    fit_utterances: distinct train utterances drawn (seeded, without replacement;
    -1 = all) whose frames fit k-means, in place of kmeans.percent.
    scored_utterances: distinct valid utterances (held-out voices) drawn the same
    way and scored, -1 = all. They are drawn apart, not as one draw over train +
    valid, so that a small valid split is not drawn down in proportion: PNMI's
    finite-sample floor rises as the scored frames fall, and more for units that
    several languages share (the layers') than for MFCC's, which would flatter the
    layers. seed: the draws (k-means keeps kmeans.seed). seeds: k-means runs per
    layer (seeds kmeans.seed, +1, ...): the scores are their means, and their
    spread says which differences are noise.
    """

    fit_utterances: int = 520
    scored_utterances: int = 1000
    seed: int = 0
    seeds: int = 3

    def __post_init__(self) -> None:
        for name in ("fit_utterances", "scored_utterances"):
            value = getattr(self, name)
            if not (value == -1 or value >= 1):
                raise ValueError(f"labels.sweep.{name}={value} must be >= 1, or -1 for all")
        if self.seeds < 1:
            raise ValueError(f"labels.sweep.seeds={self.seeds} must be >= 1")
