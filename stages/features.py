"""Stage features: dump k-means input features in fairseq's layout.

    python stages/features.py --params params.yaml --iteration iter1 \
        --manifests data/manifests --out data/features/iter1
    python stages/features.py --params params.yaml --iteration iter2 \
        --manifests data/manifests --out data/features/iter2 \
        --checkpoint data/pretrain/iter1/checkpoint.pt --layer-from data/layers_iter1/choice.json

Reads labels.<iteration>.features (kind mfcc | hubert) and corpus.sample_rate.
Writes out/{split}_{rank}_{nshard}.npy + .len for each split in
features.splits; the folder is rebuilt whole.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hubert.labels.features import dump_features
from hubert.labels.params import feature_config
from hubert.params import load_section


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iteration", required=True, help="labels section to use: iter1 | iter2")
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, help="fairseq HuBERT checkpoint (features.kind=hubert)")
    parser.add_argument("--layer-from", type=Path, help="the layer sweep's choice.json (features.layer: auto)")
    args = parser.parse_args(argv)

    cfg = feature_config(load_section(args.params, "labels"), args.iteration)
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    summary = dump_features(cfg, args.manifests, args.out, sample_rate, args.checkpoint, args.layer_from)
    for split, s in summary.items():
        print(f"features {args.iteration} {split}: {s['utterances']} utterances, {s['frames']} frames "
              f"({cfg.kind}, {cfg.nshard} shards, {s['seconds']} s) -> {args.out}")
    return summary


if __name__ == "__main__":
    main()
