"""Stage evaluate: every fine-tuned variant on the held-out test voices, with intervals.

    python stages/evaluate.py --params params.yaml --finetuned data/finetune --letters data/letters \
        --out data/eval --metrics metrics/eval.json

Greedy CTC decoding one utterance at a time; zh CER (whitespace removed), en WER
and CER, a mixed error rate (Han characters + English words) on a code-switched
set built by concatenating held-out zh and en test utterances, substitution /
deletion / insertion rates, the hypothesis <unk> rate, language-ID accuracy for
variants with the token; 95% bootstrap intervals over test utterances; paired
bootstrap of the differences in evaluate.compare; calibration floors (empty
and constant output) per language; real speech from evaluate.real_speech.

Writes out/<variant>/utterances.jsonl (reference, hypothesis, errors per
utterance), out/floors.json (the constant outputs) and --metrics (numbers only:
one entry per variant and language, floors, compare).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hubert.evaluate.run import HEADLINE, evaluate, evaluate_params
from hubert.finetune.params import variants
from hubert.params import load_section


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--finetuned", type=Path, required=True)
    parser.add_argument("--letters", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)

    p = evaluate_params(load_section(args.params, "evaluate"))
    declared = variants(load_section(args.params, "finetune"))
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    metrics = evaluate(p, declared, finetuned=args.finetuned, letters=args.letters, out=args.out,
                       sample_rate=sample_rate)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    for name, diff in metrics["compare"].items():
        shown = ", ".join(f"{k} {v['difference']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]" for k, v in diff.items())
        print(f"evaluate {name}: {shown}")
    print(f"evaluate: floors {metrics['floors']} (headline metrics {HEADLINE}) -> {args.metrics}")
    return metrics


if __name__ == "__main__":
    main()
