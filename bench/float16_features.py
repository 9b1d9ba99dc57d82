"""Benchmark: k-means labels from float16 features against float32 ones.

    python -m bench.float16_features --params params.yaml --iteration iter2 \
        --features data/features/iter2 --manifests data/manifests --corpus data/corpus

Copies every shard of the dumped (float32) features to float16, runs the kmeans
stage's logic (hubert.labels.kmeans.make_labels: fit, label, checks, quality)
on both with the same params and seed, and prints the disk each takes and:

- assignment: the float32 model's labels of the float16 features against its
  labels of the float32 ones (the same centroids: only rounding can differ);
- refit: k-means fitted on float16 features against the float32 fit, as the
  normalised mutual information of the two labelings (cluster numbers differ
  between fits, so frame agreement says nothing) and the label-quality metrics,
  next to the same comparison between two float32 fits with seeds s and s+1:
  the noise a refit has anyway.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path

import joblib
import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from hubert.fairseq.formats import iter_shards, label_file, read_label_lines
from hubert.labels.kmeans import MODEL_FILE, assign, make_labels
from hubert.labels.params import iteration_config
from hubert.params import load_section


def to_float16(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for path in sorted(src.iterdir()):
        if path.suffix == ".npy":
            np.save(dst / path.name, np.load(path, mmap_mode="r").astype(np.float16))
        else:
            shutil.copy(path, dst / path.name)


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix == ".npy")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iteration", default="iter2")
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    args = parser.parse_args(argv)

    cfg = iteration_config(load_section(args.params, "labels"), args.iteration).kmeans
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    dtypes = {np.load(p, mmap_mode="r").dtype for p in args.features.glob("*.npy")}
    if dtypes != {np.dtype(np.float32)}:
        raise ValueError(f"{args.features}: features of dtype {dtypes}; dump them as float32 first")
    with tempfile.TemporaryDirectory(prefix="float16_") as tmp:
        half = Path(tmp) / "features"
        to_float16(args.features, half)
        runs = (("float32", args.features, cfg), ("float16", half, cfg),
                ("float32, seed + 1", args.features, dataclasses.replace(cfg, seed=cfg.seed + 1)))
        metrics = {name: make_labels(c, feats, args.manifests, args.corpus, Path(tmp) / name, sample_rate,
                                     progress=False) for name, feats, c in runs}

        def labels(name: str) -> np.ndarray:
            return np.asarray([int(u) for split in ("train", "valid")
                               for line in read_label_lines(label_file(Path(tmp) / name, split)) for u in line])

        nmi = {name: normalized_mutual_info_score(labels("float32"), labels(name)) for name in list(metrics)[1:]}
        model = joblib.load(Path(tmp) / "float32" / MODEL_FILE)
        agree = total = 0
        for (f32, _), (f16, _) in zip(iter_shards(args.features, "train"), iter_shards(half, "train")):
            agree += int((assign(model, f32)[0] == assign(model, f16)[0]).sum())
            total += len(f32)
        max_err = max(float(np.abs(np.asarray(f32, dtype=np.float32) - np.asarray(f16, dtype=np.float32)).max())
                      for (f32, _), (f16, _) in zip(iter_shards(args.features, "train"), iter_shards(half, "train")))
        sizes = {"float32": disk_bytes(args.features), "float16": disk_bytes(half)}
    print(f"features {args.features}: {sizes['float32'] / 1e6:.1f} MB float32, {sizes['float16'] / 1e6:.1f} MB "
          f"float16; largest rounding error {max_err:.3g}")
    print(f"assignment with the float32 model: {agree} of {total} train frames get the same unit "
          f"({agree / total:.4%}), K={cfg.n_clusters}")
    names = list(metrics)
    print(f"{'refit, against float32':24s} " + " ".join(f"{n:>18s}" for n in names))
    print(f"{'NMI of the labelings':24s} {1.0:18.4f} " + " ".join(f"{nmi[n]:18.4f}" for n in names[1:]))
    rows = [(k, lambda m, k=k: m.get(k)) for k in ("pnmi", "phone_purity", "cluster_purity", "pnmi_shuffled",
                                                   "label_prior_entropy_bits")]
    rows += [(f"pnmi {lang}", lambda m, lang=lang: m["per_language"][lang].get("pnmi"))
             for lang in metrics["float32"].get("per_language", {})]
    for key, get in rows:
        if get(metrics["float32"]) is not None:
            print(f"{key:24s} " + " ".join(f"{get(metrics[n]):18.4f}" for n in names))
    return {"assignment_agreement": agree / total, "nmi": nmi, "sizes": sizes, "metrics": metrics}


if __name__ == "__main__":
    main()
