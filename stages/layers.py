"""Stage layers: which transformer layer of a HuBERT checkpoint gives the best labels?

    python stages/layers.py --params params.yaml --iteration iter2 \
        --checkpoint data/pretrain/iter1/checkpoint.pt --manifests data/manifests \
        --corpus data/corpus --metrics metrics/layers_iter1.json

Every layer clustered with labels.<iteration>.kmeans (the K of that
iteration's labels) and scored beside MFCC at the same K on one seeded draw
(labels.sweep); hubert.labels.layers says how. Reads labels.sweep,
labels.<iteration>.kmeans, labels.<iteration>.features (device,
chunk_samples, workers only: the layer is what is swept) and
corpus.sample_rate. Writes only the metrics file (numbers only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hubert.labels.layers import sweep_layers
from hubert.labels.params import SweepConfig, iteration_config
from hubert.params import from_dict, load_section


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iteration", required=True,
                        help="labels section whose k-means settings (K) cluster every layer: iter2")
    parser.add_argument("--checkpoint", type=Path, required=True, help="fairseq HuBERT checkpoint to sweep")
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)

    labels = load_section(args.params, "labels")
    it = iteration_config(labels, args.iteration)
    sweep = from_dict(SweepConfig, labels.get("sweep"), "labels.sweep")
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    metrics = sweep_layers(it, sweep, args.checkpoint, args.manifests, args.corpus, sample_rate)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    if "best_layer" not in metrics:
        print(f"layers: no phone alignments among {metrics['utterances']} utterances: no scores -> {args.metrics}")
        return metrics
    for layer in range(1, metrics["n_layers"] + 1):
        key = f"layer_{layer}"
        print(f"layers: layer {layer}: PNMI {metrics['pnmi'][key]} (shuffled {metrics['pnmi_shuffled'][key]}), "
              f"phone purity {metrics['phone_purity'][key]}")
    print(f"layers: best layer {metrics['best_layer']} of {metrics['n_layers']}: PNMI {metrics['best_pnmi']} vs "
          f"MFCC {metrics['mfcc']['pnmi']} ({metrics['mfcc_at_layer_rate']['pnmi']} at "
          f"{metrics['label_rate']:g} Hz) at K={metrics['n_clusters']} -> {args.metrics}")
    return metrics


if __name__ == "__main__":
    main()
