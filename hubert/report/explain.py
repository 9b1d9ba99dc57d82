"""Explain a fairseq HuBERT pretraining log from any machine: is the loss normal?

    python -m hubert.report.explain hydra_train.log --k 100 --out explained/
    python -m hubert.report.explain train.log --dict data/labels/iter2/dict.km.txt \
        --labels data/labels/iter2/train.km --iteration 2 --out explained/

The log: fairseq-hydra-train's ``hydra_train.log`` or its console output (json
or simple progress format), or this pipeline's ``train_log.jsonl``. K comes from
``--k`` or the ``dict.km.txt`` the run used. ``--labels`` (a ``.km`` file of the
run) adds the label prior H(z); ``--iteration`` adds the published reference of
that iteration. The batch (GPUs, max_tokens, update_freq) is read from the
config fairseq writes at the top of its log; ``--gpus`` / ``--max-tokens`` /
``--update-freq`` give or override it. Writes ``index.md``, ``index.html`` and
the figures into ``--out`` and prints the verdicts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hubert.fairseq.formats import iter_label_lines, read_dict
from hubert.labels.quality import entropy_bits
from hubert.pretrain.config import batch_arithmetic
from hubert.report.curves import LogError, missing_keys, read_log
from hubert.report.page import log_report

SAMPLE_RATE = 16_000  # fairseq's HuBERT recipes: max_tokens counts 16 kHz samples


def label_prior(path: Path) -> float:
    """H(z) in bits of the units in a ``.km`` file (one utterance of space-separated units per line)."""
    counts: dict[str, int] = {}
    for units in iter_label_lines(path):
        for u in units:
            counts[u] = counts.get(u, 0) + 1
    if not counts:
        raise LogError(f"{path}: no labels in it; give the .km file the run trained on")
    return entropy_bits(np.array(list(counts.values())))


def batch_of(config: dict, gpus: int | None, max_tokens: int | None, update_freq: int | None) -> dict | None:
    workers = gpus if gpus is not None else config.get("distributed_world_size")
    tokens = max_tokens if max_tokens is not None else config.get("max_tokens")
    freq = update_freq if update_freq is not None else config.get("update_freq", 1)
    if workers is None or tokens is None:
        return None
    return batch_arithmetic(max(int(workers), 1), int(tokens), int(freq), SAMPLE_RATE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="hydra_train.log, console output, or train_log.jsonl")
    k = parser.add_mutually_exclusive_group(required=True)
    k.add_argument("--k", type=int, help="number of k-means units K")
    k.add_argument("--dict", type=Path, help="the run's dict.km.txt (K = its number of lines)")
    parser.add_argument("--labels", type=Path, help="a .km label file of the run: adds the label prior H(z)")
    parser.add_argument("--iteration", type=int, choices=(1, 2), help="adds that iteration's published reference")
    parser.add_argument("--gpus", type=int, help="GPUs of the run (default: from the log's config)")
    parser.add_argument("--max-tokens", type=int, help="max_tokens of the run (default: from the log's config)")
    parser.add_argument("--update-freq", type=int, help="update_freq of the run (default: from the log's config)")
    parser.add_argument("--out", type=Path, required=True, help="folder for index.md, index.html and figures")
    args = parser.parse_args(argv)
    try:
        units = args.k if args.k is not None else len(read_dict(args.dict))
        if units < 1:
            raise LogError(f"K={units}: give the number of k-means units (--k 100) or a non-empty --dict")
        records, curves, config = read_log(args.log)
        missing = missing_keys(records)
        if missing:
            found = sorted({key for tag, stats in records if tag == "train_inner" for key in stats})
            raise LogError(f"{args.log}: its training records lack {', '.join(missing)} "
                           f"({len(records)} records; keys found: {', '.join(found) or 'none'}). Explaining needs "
                           "fairseq's hubert criterion logging train_inner records (log_format json or simple), "
                           "e.g. fairseq-hydra-train's hydra_train.log")
        prior = label_prior(args.labels) if args.labels else None
    except (LogError, ValueError, OSError) as exc:
        print(f"explain: {exc}", file=sys.stderr)
        return 2
    batch = batch_of(config, args.gpus, args.max_tokens, args.update_freq)
    note = "" if batch else ("The log has no config dump naming the batch (distributed_world_size, max_tokens, "
                             "update_freq): give --gpus and --max-tokens to compare it with the reference.")
    findings = log_report(curves, units, args.out, source=str(args.log), prior=prior, iteration=args.iteration,
                          batch=batch, note=note)
    for f in findings:
        print(f"{'FLAG ' if f.flag else ''}{f.topic}: {f.text}")
    if note:
        print(note)
    print(f"explain: {args.out / 'index.md'}, {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
