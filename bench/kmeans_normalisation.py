"""Benchmark (label quality, not speed): does normalising the features before k-means
change the layer sweep's verdict, the best layer against MFCC?

    python -m bench.kmeans_normalisation --checkpoint data/pretrain/iter1/checkpoint.pt \
        --manifests data/manifests --corpus data/corpus --norms none,standardize,l2,utterance_mean,utterance_mvn

The layers_iter1 stage's protocol (hubert.labels.layers: its seeded draw of
labels.sweep, labels.iter2.kmeans with labels.sweep.seeds seeds, the scores of
hubert.labels.quality on the valid voices, MFCC decimated to the layers' 50 Hz),
with each feature set transformed before the fit:

- none: as the stage (and fairseq's recipe) does;
- standardize: each dimension to zero mean and unit variance, the statistics of
  the k-means fit frames (train) applied to the scored ones;
- l2: each frame scaled to unit length (k-means on directions: cosine distance);
- utterance_mean: each utterance's own mean subtracted per dimension (cepstral
  mean normalisation, as Kaldi's apply-cmvn per utterance): what is constant over an
  utterance (a voice, a channel) leaves the features;
- utterance_mvn: the same, and each dimension scaled to the utterance's unit
  variance.

The two per-utterance norms use no statistics of other utterances, so the fit
and the scored frames are transformed alike.

Prints, per norm, each layer's and MFCC's language-conditional PNMI (mean over
seeds, sample std) with and without tones, and its shuffled floor (the same
labels permuted across frames: what the finite valid set gives by chance), so a
margin between two rows can be read with each floor subtracted.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from hubert.corpus.records import lookup_utterances
from hubert.fairseq.formats import iter_shards, write_tsv
from hubert.labels.features import dump_split, usable_cpus
from hubert.labels.hubert_layers import HubertFeatureReader
from hubert.labels.kmeans import assign, fit_kmeans
from hubert.labels.layers import SPLIT, AllLayers, distinct_utterances, draw
from hubert.labels.mfcc import MfccExtractor
from hubert.labels.params import FeatureConfig, KMeansConfig, SweepConfig, iteration_config
from hubert.labels.quality import UttLabels, label_quality
from hubert.params import from_dict, load_section

NORMS = ("none", "standardize", "l2", "utterance_mean", "utterance_mvn")


def normalise(feats: np.ndarray, fit_frames: int, norm: str, lengths: list[int] | None = None) -> np.ndarray:
    """feats (frames, dim) transformed by ``norm``; standardize takes its statistics from the first fit_frames,
    the utterance norms from each utterance of ``lengths`` (frames per utterance, in order)."""
    if norm == "standardize":
        fit = feats[:fit_frames]
        return (feats - fit.mean(0)) / (fit.std(0) + 1e-5)  # +eps: a constant dimension stays 0
    if norm == "l2":
        return feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)
    if norm == "none":
        return feats
    if norm in ("utterance_mean", "utterance_mvn"):
        if lengths is None or sum(lengths) != len(feats):
            raise ValueError(f"norm {norm} needs the utterances' lengths (frames), summing to {len(feats)}")
        utts = np.split(feats, np.cumsum(lengths)[:-1])  # score's split of the frames into utterances
        if norm == "utterance_mean":
            return np.concatenate([u - u.mean(0) for u in utts])
        return np.concatenate([(u - u.mean(0)) / (u.std(0) + 1e-5) for u in utts])
    raise ValueError(f"unknown norm {norm!r}: use one of {', '.join(NORMS)}")


def score(feat_dir: Path, columns: slice, lengths: list[int], n_fit: int, meta: list, step: int, rate: float,
          cfg: KMeansConfig, norm: str) -> tuple[float, float | None, float]:
    """Conditional PNMI, its toneless twin (None without tones) and its shuffled floor, of k-means on the
    normalised fit frames, scored on the other utterances with the labels decimated by ``step`` to ``rate`` Hz."""
    feats = np.concatenate([np.asarray(f[:, columns], dtype=np.float32) for f, _ in iter_shards(feat_dir, SPLIT)])
    fit_frames = sum(lengths[:n_fit])
    feats = normalise(feats, fit_frames, norm, lengths)
    units, _ = assign(fit_kmeans(feats[:fit_frames], cfg), feats[fit_frames:])
    per_utt = np.split(units, np.cumsum(lengths[n_fit:])[:-1])
    quality = label_quality([UttLabels(u.lang, u.alignment, z[::step]) for u, z in zip(meta[n_fit:], per_utt)],
                            rate, cfg.n_clusters, cfg.seed)
    return (quality["pnmi_conditional"], quality.get("toneless", {}).get("pnmi_conditional"),
            quality["pnmi_conditional_shuffled"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--norms", default=",".join(NORMS), help=f"comma-separated, of {', '.join(NORMS)}")
    args = parser.parse_args(argv)
    norms = args.norms.split(",")
    for norm in norms:
        normalise(np.zeros((1, 1), dtype=np.float32), 1, norm, [1])  # an unknown name fails before minutes of work

    labels = load_section(args.params, "labels")
    it = iteration_config(labels, "iter2")
    sweep = from_dict(SweepConfig, labels.get("sweep"), "labels.sweep")
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    reader = HubertFeatureReader(args.checkpoint, 1, it.features.device, it.features.chunk_samples)
    utts = draw(distinct_utterances(args.manifests, ("train", "valid")), sweep.fit_utterances,
                sweep.scored_utterances, sweep.seed)
    meta = lookup_utterances(args.corpus, [u.rel for u in utts], f"{args.manifests}/{{train,valid}}.tsv")
    n_fit = sum(u.split == "train" for u in utts)
    seeds = [dataclasses.replace(it.kmeans, seed=it.kmeans.seed + k) for k in range(sweep.seeds)]
    mfcc = MfccExtractor(sample_rate)
    rate = reader.frame_rate
    with tempfile.TemporaryDirectory(prefix="bench_norm_") as tmp:
        tsv = Path(tmp) / f"{SPLIT}.tsv"
        write_tsv(tsv, ".", ((u.path, u.num_samples) for u in utts))
        workers = min(it.features.workers, len(utts))
        hubert_dir, mfcc_dir = Path(tmp) / "hubert", Path(tmp) / "mfcc"
        cfg = dataclasses.replace(it.features, nshard=workers, max_batch_samples=0, dtype="float32")
        lengths = dump_split(tsv, SPLIT, hubert_dir, cfg, sample_rate, extractor=AllLayers(reader))
        mfcc_lengths = dump_split(tsv, SPLIT, mfcc_dir, FeatureConfig(nshard=workers, workers=workers), sample_rate,
                                  extractor=mfcc)
        dim = reader.dim
        jobs = []
        for norm in norms:
            for layer in range(1, reader.n_layers + 1):
                jobs += [((norm, f"layer {layer}"), hubert_dir, slice((layer - 1) * dim, layer * dim), lengths, 1,
                          km, norm) for km in seeds]
            jobs += [((norm, f"MFCC at {rate:g} Hz"), mfcc_dir, slice(None), mfcc_lengths,
                      round(mfcc.frame_rate / rate), km, norm) for km in seeds]
        results = Parallel(n_jobs=min(usable_cpus(), len(jobs)), backend="loky")(
            delayed(score)(d, cols, lens, n_fit, meta, step, rate, km, norm)
            for _, d, cols, lens, step, km, norm in jobs)
    by_key: dict = {}
    for (key, *_), result in zip(jobs, results):
        by_key.setdefault(key, []).append(result)
    print(f"| norm | features | conditional PNMI (K={it.kmeans.n_clusters}, {rate:g} Hz, {len(seeds)} seeds) "
          "| without tones | shuffled floor |")
    print("|---|---|---|---|---|")
    for (norm, what), runs in by_key.items():
        tonal = np.array([r[0] for r in runs])
        spread = f" +- {tonal.std(ddof=1):.4f}" if len(runs) > 1 else ""
        toneless = f"{np.mean([r[1] for r in runs]):.4f}" if runs[0][1] is not None else "-"
        print(f"| {norm} | {what} | {tonal.mean():.4f}{spread} | {toneless} | {np.mean([r[2] for r in runs]):.4f} |")


if __name__ == "__main__":
    main()
