"""Benchmark: the disk an imported corpus costs, copied or referenced in place, with
DVC's cache copied or linked.

    python -m bench.import_disk --manifest /data/my/corpus.tsv

For each case, a throwaway copy of the pipeline (dvc.yaml, params, code) in a
temporary folder runs `dvc repro corpus` on the manifest alone
(corpus.synthetic.utterances at 0), then `data/corpus` and `.dvc/cache` are
measured together with `du` (hard links counted once).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIPELINE = ("dvc.yaml", ".dvcignore", ".dvc/config", "params", "hubert", "stages")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def disk_mb(repo: Path) -> float:
    out = run(["du", "-skc", "data/corpus", ".dvc/cache"], repo)
    return int(out.splitlines()[-1].split()[0]) / 1024


def case(manifest: Path, copy: bool, cache_type: str | None, workdir: Path) -> float:
    repo = workdir / f"copy_{copy}_{cache_type or 'repo'}".replace(",", "_")
    for name in PIPELINE:
        src, dst = REPO / name, repo / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(repo))
    for git in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"]):
        run(["git", *git], repo)
    if cache_type:
        run([sys.executable, "-m", "dvc", "config", "cache.type", cache_type], repo, env)
    run([sys.executable, "-m", "stages.compose_params", "profile=demo", "corpus.synthetic.utterances.en=0",
         "corpus.synthetic.utterances.zh=0",
         f"corpus.imports=[{{format:manifest,root:'{manifest}',copy:{str(copy).lower()}}}]",
         "--out", "params.yaml"], repo, env)
    run([sys.executable, "-m", "dvc", "repro", "corpus"], repo, env)
    return disk_mb(repo)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True, help="a generic manifest (.tsv with a header)")
    args = parser.parse_args(argv)
    manifest = args.manifest.resolve()
    source_mb = sum(p.stat().st_size for p in manifest.parent.rglob("*") if p.is_file()) / 2**20
    print(f"{manifest}: {source_mb:.0f} MB")
    results = {}
    with tempfile.TemporaryDirectory(prefix="import_disk_") as tmp:
        for copy in (True, False):
            for cache_type in ("copy", None):  # None: this repository's .dvc/config
                mb = case(manifest, copy, cache_type, Path(tmp))
                results[(copy, cache_type or "repo")] = mb
                print(f"copy: {str(copy).lower():5s} cache.type: {cache_type or 'as in .dvc/config':18s} "
                      f"data/corpus + .dvc/cache = {mb:.0f} MB")
    return results


if __name__ == "__main__":
    main()
