"""Stage letters: the character vocabulary of the fine-tuning transcripts and fairseq's letter targets.

    python stages/letters.py --params params.yaml --manifests data/manifests --out data/letters \
        --metrics metrics/letters.json

Writes out/dict.ltr.txt and out/dict.lidltr.txt (the same tokens, the latter with
<en> / <zh> language-ID tokens first) and, for finetune, valid and test (all
languages, then {split}_{lang}), {split}.tsv, .wrd, .lang, .ltr and .lidltr of the
utterances that have a target (see hubert/finetune/letters.py for the format).
Unknown tokens become <unk> and are counted; utterances left with nothing, and
fine-tuning and valid utterances outside fine-tuning's length limits
(finetune.batch.max_tokens, the masking minimum: hubert/balance/lengths.py) are
skipped and counted, in --metrics (balance.length_policy refuse stops instead).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hubert.balance.lengths import finetune_min_samples
from hubert.balance.splits import BalanceConfig
from hubert.finetune.letters import write_letters
from hubert.finetune.params import finetune_params
from hubert.params import from_dict, load_section


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)

    ft = finetune_params(load_section(args.params, "finetune"))
    policy = from_dict(BalanceConfig, load_section(args.params, "balance"), "balance").length_policy
    metrics = write_letters(args.manifests, args.out, longest=ft.batch.max_tokens,
                            shortest=finetune_min_samples(ft.model.apply_mask, ft.model.mask_prob,
                                                          ft.model.mask_length),
                            policy=policy, sample_rate=int(load_section(args.params, "corpus")["sample_rate"]))
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    reasons = ("skipped_empty", "skipped_unknown_only", "skipped_too_long", "skipped_too_short")
    skipped = {f"{split} {lang} {r[len('skipped_'):]}": c[r] for split, per in metrics["splits"].items()
               for lang, c in per.items() for r in reasons if c[r]}
    unk = {f"{split} {lang}": c["unk_rate"] for split, per in metrics["splits"].items() for lang, c in per.items()
           if c["unk_rate"]}
    print(f"letters: {metrics['vocabulary']['tokens']} tokens ({metrics['vocabulary']['han']} Han) -> {args.out}; "
          f"unknown-token rate {unk or 0}; utterances skipped {skipped or 0}")
    return metrics


if __name__ == "__main__":
    main()
