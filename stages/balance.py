"""Stage balance: speaker-disjoint splits, fine-tuning subset, language-balanced
pretraining list, as fairseq manifests.

    python stages/balance.py --params params.yaml --corpus data/corpus \
        --out data/manifests --metrics metrics/balance.json

Writes out/{train,valid,test,finetune}.{tsv,lang,wrd}; train is the balanced
pretraining list. The tsv root line is --corpus as given (keep it relative).
Checks every utterance's length against what the training stages admit
(finetune.batch.max_tokens, fine-tuning's masking, pretrain.batch.min_sample_size)
before any training starts: balance.length_policy skip counts them in --metrics
(lengths), refuse stops here naming them (hubert/balance/lengths.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hubert.balance.lengths import Item, check_splits, limits_of_sections, skipped_total
from hubert.balance.metrics import balance_metrics
from hubert.balance.splits import BalanceConfig, balance_corpus, speaker_warning, write_manifests
from hubert.corpus.records import read_manifest
from hubert.params import from_dict, load_section


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)

    cfg = from_dict(BalanceConfig, load_section(args.params, "balance"), "balance")
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    utts = read_manifest(args.corpus / "manifest.jsonl")
    warning = speaker_warning(utts, cfg)
    if warning:
        print(warning, file=sys.stderr)
    splits, pretrain = balance_corpus(utts, cfg, sample_rate)
    # before anything is written: with length_policy refuse, a length no training stage admits stops here
    limits = limits_of_sections(load_section(args.params, "finetune"), load_section(args.params, "pretrain"))
    items = {split: [Item(f"{args.corpus.as_posix()}/{u.path}", u.num_samples, u.lang) for u in us]
             for split, us in splits.items()}
    lengths = check_splits(items, limits, cfg.length_policy, sample_rate)
    write_manifests(args.out, args.corpus.as_posix(), splits, pretrain)
    metrics = balance_metrics(splits, pretrain, cfg.alpha, sample_rate)
    metrics["lengths"] = lengths
    skipped = skipped_total(lengths)
    print(f"balance: utterances {lengths['shortest_s']}-{lengths['longest_s']} s; outside a training stage's "
          f"limits (balance.length_policy={cfg.length_policy}, left out of that stage only): {skipped or 'none'}")
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"balance: pretraining proportions {metrics['pretrain']['proportion_effective']} "
          f"(natural {metrics['pretrain']['proportion_natural']}) -> {args.out}")
    return metrics


if __name__ == "__main__":
    main()
