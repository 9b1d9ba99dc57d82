"""Stage corpus: build the synthetic bilingual corpus and/or import real corpora.

    python stages/corpus.py --params params.yaml --out data/corpus --metrics metrics/corpus.json

Writes out/audio/**.wav (16 kHz mono), out/manifest.jsonl, out/rejected.jsonl,
out/alignment_problems.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hubert.corpus.build import (
    CorpusParams,
    alignment_warning,
    check_usable,
    clipping_warning,
    corpus_metrics,
    make_corpus,
)
from hubert.params import from_dict, load_section


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)

    p = from_dict(CorpusParams, load_section(args.params, "corpus"), "corpus")
    built = make_corpus(p, args.out)
    kept, rejected = built.kept, built.rejected
    metrics = corpus_metrics(kept, rejected, p.sample_rate, len(built.alignment_problems))
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    if rejected:
        print(f"rejected {len(rejected)} utterance(s); reasons and fixes in {args.out / 'rejected.jsonl'}",
              file=sys.stderr)
    check_usable(kept, rejected, args.out / "rejected.jsonl")
    for warning in (clipping_warning(kept, args.out / "manifest.jsonl"), alignment_warning(built, args.out)):
        if warning:
            print(warning, file=sys.stderr)
    print(f"corpus: {metrics['utterances']['total']} utterances, {metrics['hours']['total']:.3f} h -> {args.out}")
    return metrics


if __name__ == "__main__":
    main()
