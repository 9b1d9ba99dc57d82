"""The committed demo run's report, kept in the repository (``docs/demo-report/``) so a
visitor sees what the pipeline produces without a run of their own.

    python -m hubert.report.committed            # regenerate docs/demo-report (make demo-report)
    python -m hubert.report.committed --check    # exit 1, naming the files, if it is stale

It is made from the committed files only: ``params.yaml``, ``metrics/`` and
``dvclive/`` (the pretraining curves). The exported transformers folders are not
in git, so the page says the export stage has not run here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from hubert.report.page import report_of_params

OUT = Path("docs/demo-report")


def regenerate(repo: Path, out: Path) -> None:
    """Write the report of the run committed in ``repo`` into ``out``, replacing what is there
    (a figure the report no longer draws must not linger)."""
    if out.exists():
        shutil.rmtree(out)
    report_of_params(repo / "params.yaml", repo / "metrics", repo / "dvclive", out)


def differences(committed: Path, fresh: Path) -> list[str]:
    """The files that differ between two report folders (missing on either side, or other bytes)."""
    a = {p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.is_file()} if committed.is_dir() \
        else set()
    b = {p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file()}
    out = [f"{name}: not in {committed}" for name in sorted(b - a)]
    out += [f"{name}: no longer made" for name in sorted(a - b)]
    out += [f"{name}: differs" for name in sorted(a & b)
            if (committed / name).read_bytes() != (fresh / name).read_bytes()]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=None, help=f"default: REPO/{OUT}")
    parser.add_argument("--check", action="store_true", help="compare a fresh copy with --out, write nothing")
    args = parser.parse_args(argv)
    out = args.out or args.repo / OUT
    if not args.check:
        regenerate(args.repo, out)
        print(f"demo report: {out / 'index.md'}, {out / 'index.html'}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "report"
        regenerate(args.repo, fresh)
        stale = differences(out, fresh)
    for line in stale:
        print(f"demo report: {out}/{line}", file=sys.stderr)
    if stale:
        print("demo report: stale against the committed metrics; run `make demo-report` and commit docs/demo-report",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
