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
from pathlib import Path

from hubert.labels.kmeans import make_labels
from hubert.labels.params import iteration_config
from hubert.params import load_section


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

    cfg = iteration_config(load_section(args.params, "labels"), args.iteration).kmeans
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    metrics = make_labels(cfg, args.features, args.manifests, args.corpus, args.out, sample_rate)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    quality = (f"on the valid voices: conditional PNMI {metrics['pnmi_conditional']} (shuffled "
               f"{metrics['pnmi_conditional_shuffled']}), per language "
               + ", ".join(f"{lang} {b['pnmi']}" for lang, b in metrics["per_language"].items() if "pnmi" in b)
               + f", language-prefixed {metrics['pnmi_prefixed']}" if "pnmi_conditional" in metrics else
               f"no alignments: PNMI and purities absent ({metrics['utterances']['without_alignment']} utterances "
               "without phones; import alignments with corpus.imports[].alignments)")
    print(f"kmeans {args.iteration}: label_rate {metrics['label_rate']:g} Hz, {quality}, "
          f"H(z) {metrics['label_prior_entropy_bits']} bits -> {args.out}, {args.metrics}")
    return metrics


if __name__ == "__main__":
    main()
