"""Stage pretrain_<iteration>: HuBERT pretraining on fairseq, resumable, with a loss that explains itself.

    python stages/pretrain.py --params params.yaml --iteration iter1 \
        --manifests data/manifests --labels data/labels/iter1 --out data/pretrain/iter1 \
        --metrics metrics/pretrain_iter1.json --live dvclive/pretrain_iter1

Run it from the repository root (DVC does): that is fairseq's working
directory, and every path it writes into configs and checkpoints is relative
to it. Label rate and K come from the labels directory (label_rate.json,
dict.km.txt), never from params.

Writes
- out/fairseq_config.yaml: the complete config fairseq-hydra-train ran;
- out/checkpoints/: fairseq's checkpoints, train_log.jsonl and run.json (the
  resume fingerprint); a `persist: true` output, so a killed run resumes from
  checkpoint_last.pt when the config and inputs are unchanged;
- out/checkpoint.pt: the final model (fairseq checkpoint without optimizer state);
- --metrics (numbers only) and --live (DVCLive plots, step = num_updates).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hubert.params import load_section
from hubert.pretrain.metrics import verdict
from hubert.pretrain.params import ITERATIONS, iteration_params
from hubert.pretrain.run import pretrain


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iteration", choices=ITERATIONS, required=True)
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    args = parser.parse_args(argv)

    p = iteration_params(load_section(args.params, "pretrain"), args.iteration)
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    metrics = pretrain(p, manifests=args.manifests, labels=args.labels, out=args.out, live_dir=args.live,
                       sample_rate=sample_rate, root=Path.cwd(), name=f"pretrain {args.iteration}")
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"pretrain {args.iteration}: {verdict(metrics)} -> {args.out / 'checkpoint.pt'}")
    return metrics


if __name__ == "__main__":
    main()
