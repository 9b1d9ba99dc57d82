"""Compare a fresh tiny run's metrics with the committed baseline; exit 1 when any moved
beyond tolerance.

    python .ci/metrics_gate.py --baseline .ci/tiny/metrics-avx2 --fresh metrics --tolerance .ci/tolerance.yaml \
        --cpu avx2

Every numeric leaf of every JSON file is compared, except the clocks the
tolerance file lists by name. A metric that one side lacks is a failure too
(a new metric needs a new baseline: `make ci-baseline`). An override's key may be a
shell-style pattern (``layers_iter1.json:*.layer_2``); ``per_cpu.<capability>.overrides``
apply on that CPU only (--cpu).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
from pathlib import Path

import yaml


def leaves(tree, path: str = "") -> dict[str, float]:
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for key, value in tree.items():
            out.update(leaves(value, f"{path}.{key}" if path else str(key)))
        return out
    return {path: tree}


def read_metrics(folder: Path) -> dict[str, float]:
    """``{"<file relative to folder>:<dotted.key>": value}`` of every JSON file under ``folder``."""
    out = {}
    for path in sorted(folder.rglob("*.json")):
        rel = path.relative_to(folder).as_posix()
        for key, value in leaves(json.loads(path.read_text(encoding="utf-8"))).items():
            out[f"{rel}:{key}"] = value
    return out


def is_clock(key: str, tolerance: dict) -> bool:
    return key.rsplit(":", 1)[-1].rsplit(".", 1)[-1] in set(tolerance.get("ignore", []))


def limits_of(key: str, tolerance: dict, cpu: str | None) -> dict[str, float]:
    """The tolerance of one metric: the defaults, then every override whose pattern matches it,
    then this CPU's."""
    limits = {"abs": tolerance.get("abs", 0.0), "rel": tolerance.get("rel", 0.0)}
    layers = [tolerance.get("overrides") or {}]
    if cpu is not None:
        layers.append(((tolerance.get("per_cpu") or {}).get(cpu) or {}).get("overrides") or {})
    for overrides in layers:
        for pattern, value in overrides.items():
            if fnmatch.fnmatchcase(key, pattern):
                limits.update({k: v for k, v in value.items() if k in ("abs", "rel")})
    return limits


def problems(baseline: dict[str, float], fresh: dict[str, float], tolerance: dict,
             cpu: str | None = None) -> list[str]:
    out = []
    for key in sorted(set(baseline) | set(fresh)):
        if is_clock(key, tolerance):
            continue
        if key not in fresh or key not in baseline:
            out.append(f"{key}: only in the {'baseline' if key in baseline else 'fresh run'} "
                       "(a metric was added or removed: make ci-baseline, then commit .ci/tiny)")
            continue
        a, b = baseline[key], fresh[key]
        limits = limits_of(key, tolerance, cpu)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if math.isnan(a) and math.isnan(b):
                continue
            allowed = max(limits["abs"], limits["rel"] * abs(a))
            if not abs(b - a) <= allowed:
                out.append(f"{key}: {a} -> {b} (moved {b - a:+.6g}, tolerance {allowed:.6g})")
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--fresh", type=Path, required=True)
    parser.add_argument("--tolerance", type=Path, required=True)
    parser.add_argument("--cpu", default=None, help="torch's CPU capability (avx2, avx512, ...): its per_cpu overrides")
    args = parser.parse_args(argv)
    tolerance = yaml.safe_load(args.tolerance.read_text(encoding="utf-8")) or {}
    baseline, fresh = read_metrics(args.baseline), read_metrics(args.fresh)
    found = problems(baseline, fresh, tolerance, args.cpu)
    compared = len([k for k in baseline if k in fresh and not is_clock(k, tolerance)])
    if found:
        print(f"metrics gate: {len(found)} of {len(set(baseline) | set(fresh))} metrics moved beyond tolerance "
              f"({args.tolerance}):")
        print("\n".join(f"  {p}" for p in found))
        return 1
    print(f"metrics gate: {compared} metrics within tolerance of the committed tiny baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
