"""Stage finetune@<variant>: CTC fine-tuning of one variant of finetune.variants on fairseq.

    python stages/finetune.py --params params.yaml --variant iter1 --start data/pretrain/iter1/checkpoint.pt \
        --letters data/letters --out data/finetune/iter1 --metrics metrics/finetune/iter1.json \
        --live dvclive/finetune/iter1

dvc.yaml expands one stage per entry of finetune.variants (foreach): a variant
is added by editing params, not dvc.yaml. --start is data/<init>/checkpoint.pt.
Run it from the repository root (DVC does), like the pretrain stage.

Writes
- out/fairseq_config.yaml: the complete config fairseq-hydra-train ran;
- out/checkpoints/: fairseq's checkpoints (best by valid character error, last),
  train_log.jsonl and run.json; persisted, so a killed run resumes;
- out/checkpoint.pt: the best model, loadable without its pretrained checkpoint;
- --metrics and --live (DVCLive plots, step = num_updates).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hubert.finetune.params import finetune_params, variants
from hubert.finetune.run import finetune
from hubert.params import from_dict, load_section
from hubert.pretrain.params import HardwareParams


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--variant", required=True)
    parser.add_argument("--start", type=Path, required=True)
    parser.add_argument("--letters", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    args = parser.parse_args(argv)

    section = load_section(args.params, "finetune")
    declared = variants(section)
    if args.variant not in declared:
        raise SystemExit(f"finetune: no variant {args.variant!r} in {args.params} finetune.variants "
                         f"(declared: {', '.join(sorted(declared))})")
    hardware = from_dict(HardwareParams, load_section(args.params, "pretrain")["hardware"], "pretrain.hardware")
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    metrics = finetune(finetune_params(section), args.variant, declared[args.variant], hardware=hardware,
                       start_checkpoint=args.start, letters=args.letters, out=args.out, live_dir=args.live,
                       sample_rate=sample_rate, root=Path.cwd())
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    errors = {k[:-len("_uer")]: v["best"] for k, v in metrics.items() if k.endswith("_uer")}
    print(f"finetune {args.variant}: best valid character error (%) {errors} at update {metrics['best_update']} -> "
          f"{args.out / 'checkpoint.pt'}")
    return metrics


if __name__ == "__main__":
    main()
