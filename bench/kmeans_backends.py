"""Benchmark: k-means backends (scikit-learn's MiniBatchKMeans, fairseq's recipe,
against faiss.Kmeans), side by side in one run.

    python -m bench.kmeans_backends --demo-features data/features/iter1 --manifests data/manifests \
        --corpus data/corpus --synthetic-frames 5000000 --synthetic-dim 768 --synthetic-k 500

Each measurement runs in a fresh process (its peak resident memory is its own),
the backends alternate, and the table gives fit and labelling time and peak
memory:

1. the demo's features: the kmeans stage's own code (hubert.labels.kmeans.make_labels)
   with the demo's settings, once per backend, and the label PNMI it reports on
   the held-out valid voices;
2. a synthetic set of --synthetic-frames x --synthetic-dim float16 features (a
   seeded mixture of --synthetic-k Gaussians, written once to --scratch in blocks):
   the fit on a --percent sample only, then every frame labelled in streamed blocks,
   as the stage does (memory-mapped; the whole set never sits in memory).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

BACKENDS = ("sklearn", "faiss")
BLOCK = 65536


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _demo_job(backend: str, features: str, manifests: str, corpus: str, params: str, queue) -> None:
    from hubert.labels.kmeans import make_labels
    from hubert.labels.params import iteration_config
    from hubert.params import load_section

    cfg = iteration_config(load_section(params, "labels"), "iter1").kmeans
    cfg = type(cfg)(**{**cfg.__dict__, "backend": backend})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = make_labels(cfg, features, manifests, corpus, Path(tmp) / "labels", 16000, progress=False)
        seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "peak_mb": _peak_mb(), "pnmi": metrics["pnmi_conditional"],
               "pnmi_en": metrics["per_language"]["en"]["pnmi"], "pnmi_zh": metrics["per_language"]["zh"]["pnmi"]})


def write_synthetic(path: Path, frames: int, dim: int, k: int, seed: int) -> None:
    """A seeded mixture of k Gaussians, float16, written block by block into a .npy file."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(k, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(frames, dim))
    for s in range(0, frames, BLOCK):
        n = min(BLOCK, frames - s)
        out[s: s + n] = centres[rng.integers(0, k, n)] + rng.normal(0, 0.7, size=(n, dim)).astype(np.float32)
    out.flush()
    del out


def _synthetic_job(backend: str, path: str, k: int, percent: float, seed: int, queue) -> None:
    from hubert.labels.kmeans import assign, fit_kmeans
    from hubert.labels.params import KMeansConfig

    feats = np.load(path, mmap_mode="r")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(feats), int(len(feats) * percent), replace=False))
    start = time.perf_counter()
    sample = np.asarray(feats[rows], dtype=np.float32)
    model = fit_kmeans(sample, KMeansConfig(backend=backend, n_clusters=k, percent=percent, seed=seed))
    fit_s = time.perf_counter() - start
    del sample
    start = time.perf_counter()
    counts = np.zeros(k, dtype=np.int64)
    for s in range(0, len(feats), BLOCK * 8):
        labels, _ = assign(model, feats[s: s + BLOCK * 8])
        counts += np.bincount(labels, minlength=k)
    label_s = time.perf_counter() - start
    queue.put({"fit_s": fit_s, "label_s": label_s, "peak_mb": _peak_mb(), "fit_frames": len(rows),
               "units_used": int((counts > 0).sum())})


def _run(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-features", type=Path)
    parser.add_argument("--manifests", type=Path, default=Path("data/manifests"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--synthetic-frames", type=int, default=0)
    parser.add_argument("--synthetic-dim", type=int, default=768)
    parser.add_argument("--synthetic-k", type=int, default=500)
    parser.add_argument("--percent", type=float, default=0.1)
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rows = []
    if args.demo_features:
        for backend in BACKENDS:
            r = _run(_demo_job, backend, str(args.demo_features), str(args.manifests), str(args.corpus),
                     str(args.params))
            rows.append(f"| demo {args.demo_features} | {backend} | {r['seconds']:.1f} (fit + label + score) | | "
                        f"{r['peak_mb']:.0f} | PNMI {r['pnmi']:.3f} (en {r['pnmi_en']:.3f}, zh {r['pnmi_zh']:.3f}) |")
            print(rows[-1], flush=True)
    if args.synthetic_frames:
        path = args.scratch / f"kmeans_bench_{args.synthetic_frames}x{args.synthetic_dim}.npy"
        if not path.exists():
            start = time.perf_counter()
            write_synthetic(path, args.synthetic_frames, args.synthetic_dim, args.synthetic_k, args.seed)
            print(f"wrote {path} ({path.stat().st_size / 2**30:.1f} GiB) in {time.perf_counter() - start:.0f} s")
        try:
            for backend in BACKENDS:
                r = _run(_synthetic_job, backend, str(path), args.synthetic_k, args.percent, args.seed)
                rows.append(f"| synthetic {args.synthetic_frames:,} x {args.synthetic_dim}, K={args.synthetic_k} | "
                            f"{backend} | {r['fit_s']:.1f} (fit on {r['fit_frames']:,}) | {r['label_s']:.1f} | "
                            f"{r['peak_mb']:.0f} | {r['units_used']} units used |")
                print(rows[-1], flush=True)
        finally:
            path.unlink(missing_ok=True)
    print("| data | backend | fit s | label s | peak MB | labels |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(json.dumps({"threads": __import__("torch").get_num_threads()}))


if __name__ == "__main__":
    main()
