"""Stage letters: the character vocabulary of the fine-tuning transcripts and fairseq's letter targets.

    python stages/letters.py --manifests data/manifests --out data/letters --metrics metrics/letters.json

Writes out/dict.ltr.txt and out/dict.lidltr.txt (the same tokens, the latter with
<en> / <zh> language-ID tokens first) and, for finetune, valid and test (all
languages, then {split}_{lang}), {split}.tsv, .wrd, .lang, .ltr and .lidltr of the
utterances that have a target (see hubert/finetune/letters.py for the format).
Unknown tokens become <unk> and are counted; utterances left with nothing are
skipped and counted, in --metrics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hubert.finetune.letters import write_letters


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)

    metrics = write_letters(args.manifests, args.out)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    skipped = {f"{split} {lang}": c["skipped_empty"] + c["skipped_unknown_only"]
               for split, per in metrics["splits"].items() for lang, c in per.items()
               if c["skipped_empty"] + c["skipped_unknown_only"]}
    unk = {f"{split} {lang}": c["unk_rate"] for split, per in metrics["splits"].items() for lang, c in per.items()
           if c["unk_rate"]}
    print(f"letters: {metrics['vocabulary']['tokens']} tokens ({metrics['vocabulary']['han']} Han) -> {args.out}; "
          f"unknown-token rate {unk or 0}; utterances skipped (no target) {skipped or 0}")
    return metrics


if __name__ == "__main__":
    main()
