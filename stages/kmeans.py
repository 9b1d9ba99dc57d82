"""Stage kmeans: fit k-means on the balanced train features, label every dumped
split with that one model, check the labels, measure their quality.

    python stages/kmeans.py --params params.yaml --iteration iter1 \
        --features data/features/iter1 --manifests data/manifests --corpus data/corpus \
        --out data/labels/iter1 --metrics metrics/labels_iter1.json

Reads labels.<iteration>.kmeans and corpus.sample_rate. Writes (folder rebuilt whole):
  out/{split}.km       one line per line of manifests/{split}.tsv
  out/dict.km.txt      K lines "unit count" (train frame counts), written whole
  out/kmeans.joblib    the fitted sklearn MiniBatchKMeans
  out/label_rate.json  {"label_rate": 100.0, ...}: the frame rate of the features,
                       derived from frame counts vs audio lengths; pretraining reads it
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import joblib
import numpy as np

from hubert import clustering as K
from hubert import labels as L
from hubert.corpus import read_manifest
from hubert.features import read_tsv
from hubert.params import load_section
from hubert.quality import UttLabels, chance_bits, entropy_bits, label_quality

MODEL_FILE = "kmeans.joblib"
DICT_FILE = "dict.km.txt"


def dumped_splits(feat_dir: Path) -> list[str]:
    """Splits with features in feat_dir, train first (it is the one k-means is fitted on)."""
    splits = sorted({p.name.rsplit("_", 2)[0] for p in feat_dir.glob("*_*_*.npy")})
    if "train" not in splits:
        raise FileNotFoundError(f"{feat_dir}: no train features; run the features stage with train in features.splits")
    return ["train"] + [s for s in splits if s != "train"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iteration", required=True, help="labels section to use: iter1 | iter2")
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)

    cfg = K.iteration_config(load_section(args.params, "labels"), args.iteration).kmeans
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    splits = dumped_splits(args.features)

    # features must line up with the manifests before anything is fitted on them
    manifests = {s: read_tsv(args.manifests / f"{s}.tsv")[1] for s in splits}
    lengths = {s: K.split_lengths(args.features, s) for s in splits}
    for s in splits:
        if len(lengths[s]) != len(manifests[s]):
            raise ValueError(f"{args.features}: {len(lengths[s])} {s} feature rows but {args.manifests / s}.tsv has "
                             f"{len(manifests[s])} lines; the features are stale: re-run the features stage")
    rates = {s: L.estimate_frame_rate(lengths[s], [n for _, n in manifests[s]], sample_rate) for s in splits}
    label_rate = rates["train"]
    if len(set(rates.values())) != 1:
        raise ValueError(f"{args.features}: splits disagree on the frame rate {rates}; re-run the features stage")

    sample = K.load_sample(args.features, "train", cfg.percent, cfg.seed)
    print(f"kmeans {args.iteration}: fitting K={cfg.n_clusters} on {len(sample)} frames x {sample.shape[1]} dims")
    model = K.fit_kmeans(sample, cfg)
    assign = K.Assigner(model.cluster_centers_)

    if args.out.exists():
        shutil.rmtree(args.out)  # labels of splits no longer dumped must not linger
    args.out.mkdir(parents=True)
    joblib.dump(model, args.out / MODEL_FILE)
    labelled = {s: K.label_split(args.features, s, assign) for s in splits}
    for s, lab in labelled.items():
        K.write_km(args.out / f"{s}.km", lab.labels)
    counts = K.unit_counts(labelled["train"].labels, cfg.n_clusters)
    K.write_dict(args.out / DICT_FILE, counts)
    seconds = sum(n for _, n in manifests["train"]) / sample_rate
    L.write_label_rate(args.out, label_rate, labelled["train"].frames, seconds)
    for s in splits:  # the files as pretraining will read them
        L.check_labels(args.manifests / f"{s}.tsv", args.out / f"{s}.km", args.out / DICT_FILE, label_rate, sample_rate)

    # quality on distinct utterances of every labelled split (train's repeated lines once)
    by_path = {u.path: u for u in read_manifest(args.corpus / "manifest.jsonl")}
    seen: set[str] = set()
    utts: list[UttLabels] = []
    for s in splits:
        for (rel, _), units in zip(manifests[s], labelled[s].labels):
            if rel in seen:
                continue
            seen.add(rel)
            if rel not in by_path:
                raise KeyError(f"{args.manifests / s}.tsv lists {rel}, which is not in {args.corpus}/manifest.jsonl; "
                               "the manifests are stale: re-run the balance stage")
            u = by_path[rel]
            utts.append(UttLabels(u.lang, u.alignment, units))
    metrics = {
        "label_rate": label_rate,
        "n_clusters": cfg.n_clusters,
        "fit_frames": int(len(sample)),
        **label_quality(utts, label_rate, cfg.n_clusters, cfg.seed),
        # over train.km as pretraining sees it (repeats included): a model that
        # learned only unit frequencies scores this masked loss, chance is log2(K+4)
        "label_prior_entropy_bits": round(entropy_bits(counts), 4),
        "chance_bits": round(chance_bits(cfg.n_clusters), 4),
        "units_used_train": int((counts > 0).sum()),
        "inertia_per_frame": {"fit_sample": round(float(assign(sample)[1].mean(dtype=np.float64)), 4),
                              **{s: round(lab.sq_dist_sum / lab.frames, 4) for s, lab in labelled.items()}},
    }
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"kmeans {args.iteration}: label_rate {label_rate:g} Hz, PNMI {metrics.get('pnmi')} "
          f"(shuffled {metrics.get('pnmi_shuffled')}), H(z) {metrics['label_prior_entropy_bits']} bits "
          f"-> {args.out}, {args.metrics}")
    return metrics


if __name__ == "__main__":
    main()
