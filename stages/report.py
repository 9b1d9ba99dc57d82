"""Stage report: the run's answers in words and figures.

    python stages/report.py --params params.yaml --metrics metrics --live dvclive --export data/export \
        --out data/report --answers metrics/answers.json

Reads every metrics file and the pretraining curves (DVCLive), and
pretrain.hardware only to say whether the batch's processes are GPUs; writes
out/index.md with its PNG figures and out/index.html (the same page, one
self-contained file), and prints the flags. --export names the exported
transformers folders (stage export) on the page. A stage that has not run is named
on the page instead of its section. --answers: the numbers of the page's answers
block, a metrics file (``dvc exp show`` columns, ``dvc metrics diff``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hubert.report.page import report_of_params


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    parser.add_argument("--export", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--answers", type=Path, default=None)
    args = parser.parse_args(argv)

    findings = report_of_params(args.params, args.metrics, args.live, args.out, export=args.export,
                                answers_out=args.answers)
    flags = [f for f in findings if f.flag]
    for f in flags:
        print(f"report: FLAG {f.topic}: {f.text}")
    print(f"report: {len(findings)} findings ({len(flags)} flags) -> {args.out / 'index.md'}, "
          f"{args.out / 'index.html'}")
    return findings


if __name__ == "__main__":
    main()
