"""Stage features: dump k-means input features in fairseq's layout.

    python stages/features.py --params params.yaml --iteration iter1 \
        --manifests data/manifests --out data/features/iter1
    python stages/features.py --params params.yaml --iteration iter2 \
        --manifests data/manifests --out data/features/iter2 \
        --checkpoint data/pretrain/iter1/checkpoints/checkpoint_best.pt

Reads labels.<iteration>.features (kind mfcc | hubert) and corpus.sample_rate.
Writes out/{split}_{rank}_{nshard}.npy + .len for each split in
features.splits; the folder is rebuilt whole.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from hubert.features import dump_split, feature_config, make_extractor
from hubert.params import load_section


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iteration", required=True, help="labels section to use: iter1 | iter2")
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, help="fairseq HuBERT checkpoint (features.kind=hubert)")
    args = parser.parse_args(argv)

    cfg = feature_config(load_section(args.params, "labels"), args.iteration)
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    extractor = make_extractor(cfg, sample_rate, args.checkpoint)  # fails before the old outputs are removed
    if args.out.exists():
        shutil.rmtree(args.out)  # no shards left over from another nshard or split list
    summary = {}
    for split in cfg.splits:
        manifest = args.manifests / f"{split}.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} does not exist; features.splits names a split the balance "
                                    "stage did not write (train, valid, test, finetune)")
        start = time.perf_counter()
        frames = dump_split(manifest, split, args.out, cfg, sample_rate, extractor=extractor)
        summary[split] = {"utterances": len(frames), "frames": sum(frames),
                          "seconds": round(time.perf_counter() - start, 2)}
        print(f"features {args.iteration} {split}: {len(frames)} utterances, {sum(frames)} frames "
              f"({cfg.kind}, {cfg.nshard} shards, {summary[split]['seconds']} s) -> {args.out}")
    return summary


if __name__ == "__main__":
    main()
