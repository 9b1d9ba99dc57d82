"""Stage export: the pipeline's models as Hugging Face transformers folders, each checked
against fairseq on a held-out test utterance.

    python stages/export.py --params params.yaml --pretrained data/pretrain --finetuned data/finetune \
        --letters data/letters --out data/export --metrics metrics/export.json

Writes out/pretrain/iter1 and out/pretrain/iter2 (HubertModel) and out/finetune/<variant>
(HubertForCTC with its processor) for every variant of finetune.variants; --metrics holds,
per model, the largest difference from fairseq (every layer's hidden states; the CTC
logits) on the first test utterance and whether the greedy CTC outputs agree. A
difference above TOLERANCE fails the stage: an export that does not reproduce its model
is not written as if it did. Needs transformers (pip install '.[hf]').
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from hubert.corpus.audio import load_mono
from hubert.evaluate.run import test_items
from hubert.export import ExportError, ctc_differences, export_hf, hidden_state_differences
from hubert.finetune.params import variants
from hubert.params import load_section

ITERATIONS = ("iter1", "iter2")
# fp32 on the same CPU: the same operations in another order (measured: 0.0 to a few 1e-7)
TOLERANCE = 1e-4


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--pretrained", type=Path, required=True)
    parser.add_argument("--finetuned", type=Path, required=True)
    parser.add_argument("--letters", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)

    declared = variants(load_section(args.params, "finetune"))
    sample_rate = int(load_section(args.params, "corpus")["sample_rate"])
    probe_item = test_items(args.letters)[0]
    probe = load_mono(probe_item.paths[0], sample_rate)
    if args.out.exists():
        shutil.rmtree(args.out)  # a variant dropped from params leaves no stale folder behind
    metrics: dict = {"probe_seconds": round(len(probe) / sample_rate, 3), "pretrain": {}, "finetune": {}}
    for it in ITERATIONS:
        checkpoint, out = args.pretrained / it / "checkpoint.pt", args.out / "pretrain" / it
        export_hf(checkpoint, out)
        layers = hidden_state_differences(checkpoint, out, probe)
        metrics["pretrain"][it] = {"max_abs_diff": max(layers), "layers": len(layers)}
        print(f"export: {checkpoint} -> {out} (HubertModel); per layer max |difference| from fairseq "
              f"{', '.join(f'{d:.1e}' for d in layers)} on {probe_item.id}")
        check(out, max(layers))
    for name in declared:
        checkpoint, out = args.finetuned / name / "checkpoint.pt", args.out / "finetune" / name
        info = export_hf(checkpoint, out)
        diff, same = ctc_differences(checkpoint, out, probe)
        metrics["finetune"][name] = {"logits_max_abs_diff": diff, "greedy_equal": int(same),
                                     "vocabulary": info["vocabulary"]}
        print(f"export: {checkpoint} -> {out} (HubertForCTC, {info['vocabulary']} symbols); logits max "
              f"|difference| {diff:.1e}, greedy output {'equal' if same else 'DIFFERENT'}")
        check(out, diff, same)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def check(out: Path, diff: float, same: bool = True) -> None:
    if diff > TOLERANCE or not same:
        raise ExportError(f"{out}: the export differs from its fairseq model by {diff:.2e} (tolerance {TOLERANCE:g})"
                          f"{'' if same else ' and decodes otherwise'}; report it with the checkpoint's config")


if __name__ == "__main__":
    main()
