"""Compose params.yaml from params/ with Hydra, exactly as `dvc exp run` does.

Not a pipeline stage: `make params PROFILE=tiny` (and `make repro`) call it so a
profile can be run with plain `dvc repro`, without creating an experiment.

    python -m stages.compose_params profile=tiny corpus.synthetic.seed=3
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hubert.params import compose

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=tiny a.b=1")
    parser.add_argument("--config-dir", type=Path, default=REPO / "params")
    parser.add_argument("--out", type=Path, default=REPO / "params.yaml")
    args = parser.parse_args(argv)
    args.out.write_text(compose(args.config_dir, args.overrides), encoding="utf-8")
    print(f"wrote {args.out} ({' '.join(args.overrides) or 'defaults'})")


if __name__ == "__main__":
    main()
