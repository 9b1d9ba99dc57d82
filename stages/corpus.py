"""Stage corpus: build the synthetic bilingual corpus and/or import real corpora.

    python stages/corpus.py --params params.yaml --out data/corpus --metrics metrics/corpus.json

Writes out/audio/**.wav (16 kHz mono), out/manifest.jsonl, out/rejected.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hubert import corpus as C
from hubert.params import from_dict, load_section


@dataclass(frozen=True)
class CorpusParams:
    imports: list = field(default_factory=list)
    sample_rate: int = 16000
    min_seconds: float = 0.5
    synthetic: C.SyntheticConfig = field(default_factory=C.SyntheticConfig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)

    p = from_dict(CorpusParams, load_section(args.params, "corpus"), "corpus")
    sources = [C.synthetic_candidates(p.synthetic)] + [C.import_candidates(dict(spec)) for spec in p.imports]
    if args.out.exists():
        shutil.rmtree(args.out)  # a stage output is rebuilt whole: no stale audio from an earlier run
    kept, rejected = C.build_corpus(itertools.chain(*sources), args.out, C.BuildConfig(p.sample_rate, p.min_seconds))
    C.write_jsonl(args.out / "manifest.jsonl", (u.to_dict() for u in kept))
    C.write_jsonl(args.out / "rejected.jsonl", (r.to_dict() for r in rejected))
    metrics = C.corpus_metrics(kept, rejected, p.sample_rate)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    if rejected:
        print(f"rejected {len(rejected)} utterance(s); reasons and fixes in {args.out / 'rejected.jsonl'}", file=sys.stderr)
    C.check_usable(kept, rejected, args.out / "rejected.jsonl")
    clipped = [u for u in kept if u.clipped_samples]
    if clipped:
        worst = max(clipped, key=lambda u: u.clipped_samples)
        print(f"warning: {len(clipped)} utterance(s) have {metrics['clipped']['samples']} samples at full scale "
              f"(worst: {worst.id}, {worst.clipped_samples}, voice {worst.voice or worst.speaker}); kept, but "
              f"they are distorted: lower corpus.synthetic.volume, or re-export imported audio with headroom "
              f"(clipped_samples per utterance in {args.out / 'manifest.jsonl'})", file=sys.stderr)
    print(f"corpus: {metrics['utterances']['total']} utterances, {metrics['hours']['total']:.3f} h -> {args.out}")
    return metrics


if __name__ == "__main__":
    main()
