"""Stage layers: which transformer layer of a HuBERT checkpoint gives the best labels?

    python stages/layers.py --params params.yaml --iteration iter2 \
        --checkpoint data/pretrain/iter1/checkpoint.pt --manifests data/manifests \
        --corpus data/corpus --metrics metrics/layers_iter1.json --choice data/layers_iter1/choice.json

Every layer clustered with labels.<iteration>.kmeans (the K of that
iteration's labels) and scored beside MFCC at the same K on one seeded draw
(labels.sweep); hubert.labels.layers says how. Reads labels.sweep,
labels.<iteration>.kmeans, labels.<iteration>.features (device,
chunk_samples, workers only: the layer is what is swept) and
corpus.sample_rate. Writes the metrics file (numbers only) and the chosen layer
({"layer": n, "why": ...}), which features_iter2 reads when its layer is auto.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hubert.labels.layers import chosen_layer, sweep_layers
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
    parser.add_argument("--choice", type=Path, required=True,
                        help="where to write the chosen layer (read by features with layer: auto)")
    args = parser.parse_args(argv)

    labels = load_section(args.params, "labels")
    it = iteration_config(labels, args.iteration)
    sweep = from_dict(SweepConfig, labels.get("sweep"), "labels.sweep")
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    metrics = sweep_layers(it, sweep, args.checkpoint, args.manifests, args.corpus, sample_rate)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    layer, why = chosen_layer(metrics)
    args.choice.parent.mkdir(parents=True, exist_ok=True)
    args.choice.write_text(json.dumps({"layer": layer, "why": why}, indent=2) + "\n")
    print(f"layers: iteration 2 takes layer {layer} if labels.iter2.features.layer is auto ({why}) -> {args.choice}")
    if "best_layer" not in metrics:
        print(f"layers: no phone alignments among {metrics['utterances']} utterances: no scores -> {args.metrics}")
        return metrics
    for n in range(1, metrics["n_layers"] + 1):
        key = f"layer_{n}"
        print(f"layers: layer {n}: conditional PNMI {metrics['pnmi_conditional'][key]} "
              f"+- {metrics['pnmi_conditional_std'][key]} (shuffled {metrics['pnmi_conditional_shuffled'][key]}), "
              f"prefixed {metrics['pnmi_prefixed'][key]}")
    mfcc = metrics["mfcc_at_layer_rate"]
    print(f"layers: best layer {metrics['best_layer']} of {metrics['n_layers']}: {metrics['best_pnmi']} vs MFCC "
          f"{mfcc['pnmi_conditional']} +- {mfcc['pnmi_conditional_std']} at {metrics['label_rate']:g} Hz, "
          f"K={metrics['n_clusters']}, {metrics['seeds']} seeds -> {args.metrics}")
    return metrics


if __name__ == "__main__":
    main()
