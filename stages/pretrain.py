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

from hubert import fairseq_run as F
from hubert.params import load_section


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--iteration", choices=F.ITERATIONS, required=True)
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    args = parser.parse_args(argv)

    p = F.iteration_params(load_section(args.params, "pretrain"), args.iteration)
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    F.check_devices(p.hardware)
    root = Path.cwd()
    manifests, labels, out = (F.portable_path(x, root) for x in (args.manifests, args.labels, args.out))

    label_set = F.read_label_set(args.manifests, args.labels, sample_rate)
    print(f"pretrain {args.iteration}: {label_set.units} units at {label_set.label_rate:g} Hz from {labels}; "
          f"chance log2(K+4) = {label_set.chance_bits:.3f} bits, label prior H(z) = "
          f"{label_set.prior_entropy_bits:.3f} bits")
    batch = F.effective_batch(p.hardware, p.batch, sample_rate)
    print(f"pretrain {args.iteration}: {F.describe_batch(batch)}")

    save_dir = f"{out}/checkpoints"
    config = F.fairseq_config(p, manifests=manifests, labels=labels, label_rate=label_set.label_rate,
                              save_dir=save_dir, sample_rate=sample_rate, user_dir=F.plugin_dir(root))
    text = F.config_yaml(config, out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{F.CONFIG_NAME}.yaml").write_text(text, encoding="utf-8")

    frame_s = F.CONV_HOP / sample_rate
    result = F.train(root=root, config_dir=out, save_dir=save_dir,
                     fp=F.fingerprint(text, F.input_files(args.manifests, args.labels)),
                     max_update=p.optimization.max_update, labels=label_set,
                     dict_file=f"{labels}/dict.{F.LABEL}.txt", live_dir=args.live, frame_s=frame_s)
    if result.process_s:
        print(f"pretrain {args.iteration}: fairseq-hydra-train ran {result.process_s:.0f} s "
              f"(from update {result.resumed_from})")
    F.export_checkpoint(args.out / "checkpoints" / F.LAST, args.out / "checkpoint.pt")
    metrics = F.final_metrics(result.records, label_set, batch, frame_s)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"pretrain {args.iteration}: {F.verdict(metrics)} -> {args.out / 'checkpoint.pt'}")
    return metrics


if __name__ == "__main__":
    main()
