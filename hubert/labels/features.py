"""Frame features for k-means targets, dumped in fairseq's layout (stages
features_iter1 / features_iter2).

Two kinds, one dumping path: ``mfcc`` (:mod:`hubert.labels.mfcc`, iteration 1)
and ``hubert`` (a transformer layer of a checkpoint,
:mod:`hubert.labels.hubert_layers`, iteration 2). Dumping writes
``{split}_{rank}_{nshard}.npy`` + ``.len`` for every shard
(:mod:`hubert.fairseq.formats`), ``workers`` shards at a time on joblib threads
with torch's threads pinned (:func:`dump_split` says why).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from hubert.fairseq.formats import distinct_rows, read_tsv, shard_paths, shard_range, write_lengths
from hubert.labels.hubert_layers import HubertFeatureReader
from hubert.labels.mfcc import MfccExtractor
from hubert.labels.params import AUTO, FeatureConfig


def read_waveform(path: str | Path, num_samples: int | None, sample_rate: int) -> np.ndarray:
    """Mono float32 (num_samples,) in [-1, 1], checked against the manifest's rate and length."""
    wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise ValueError(f"{path}: {rate} Hz, expected {sample_rate}; rebuild the corpus (it resamples to 16 kHz)")
    if wav.shape[1] != 1:
        raise ValueError(f"{path}: {wav.shape[1]} channels, expected mono; rebuild the corpus (it downmixes)")
    wav = wav[:, 0]
    if num_samples is not None and len(wav) != num_samples:
        raise ValueError(f"{path}: {len(wav)} samples but the manifest says {num_samples}; "
                         "the manifest is stale: re-run the balance stage")
    return wav


class Extractor(Protocol):
    frame_rate: float
    dim: int

    def num_frames(self, num_samples: int) -> int: ...

    def get_feats_batch(self, waveforms: list[np.ndarray]) -> list[np.ndarray]: ...


def make_extractor(cfg: FeatureConfig, sample_rate: int, checkpoint: str | Path | None) -> Extractor:
    if cfg.kind == "mfcc":
        if checkpoint is not None:
            raise ValueError("features.kind=mfcc takes no checkpoint; drop --checkpoint or set kind=hubert")
        return MfccExtractor(sample_rate)
    if checkpoint is None:
        raise ValueError("features.kind=hubert needs --checkpoint (a fairseq HuBERT .pt)")
    reader = HubertFeatureReader(checkpoint, cfg.layer, cfg.device, cfg.chunk_samples, cfg.max_batch_samples)
    if reader.sample_rate != sample_rate:
        raise ValueError(f"{checkpoint}: trained at {reader.sample_rate} Hz but corpus.sample_rate={sample_rate}")
    return reader


# ---------------------------------------------------------------- dumping
def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _groups(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive [i, j) ranges of at most ``limit`` summed size (an item larger than it stands alone)."""
    out, i = [], 0
    while i < len(sizes):
        j, total = i, 0
        while j < len(sizes) and (j == i or total + sizes[j] <= limit):
            total += sizes[j]
            j += 1
        out.append((i, j))
        i = j
    return out


def dump_shard(manifest: str | Path, split: str, rank: int, nshard: int, out_dir: str | Path,
               extractor: Extractor, sample_rate: int, group_samples: int, progress: bool = True,
               dtype: str = "float32") -> list[int]:
    """Write ``{split}_{rank}_{nshard}.npy`` ((frames, dim) of ``dtype``) and ``.len``; return frames per
    distinct utterance of the manifest (:func:`hubert.fairseq.formats.distinct_rows`: a
    balanced list repeats utterances, whose features are extracted once).

    The .npy is preallocated from the manifest's num_samples (each utterance's
    frame count is known in advance), so no shard is held in memory and a
    manifest that disagrees with its audio fails loudly. Utterances go to the
    extractor in groups of about ``group_samples`` samples.
    """
    root, rows = read_tsv(manifest)
    rows, _ = distinct_rows(rows)
    start, end = shard_range(len(rows), nshard, rank)
    rows = rows[start:end]
    expected = [extractor.num_frames(n) for _, n in rows]
    short = [rel for (rel, _), f in zip(rows, expected) if f <= 0]
    if short:
        raise ValueError(f"{manifest}: {len(short)} utterance(s) too short for one feature frame "
                         f"(e.g. {short[0]}); raise corpus.min_seconds")
    npy, lens = shard_paths(out_dir, split, rank, nshard)
    npy.parent.mkdir(parents=True, exist_ok=True)
    feats = np.lib.format.open_memmap(npy, mode="w+", dtype=np.dtype(dtype), shape=(sum(expected), extractor.dim))
    offset = 0
    with tqdm(total=len(rows), desc=f"{split} {rank}/{nshard}", unit="utt", position=rank,
              disable=not progress) as bar:
        for i, j in _groups([n for _, n in rows], max(group_samples, 1)):
            waves = [read_waveform(os.path.join(root, rel), n, sample_rate) for rel, n in rows[i:j]]
            for (rel, _), want, got in zip(rows[i:j], expected[i:j], extractor.get_feats_batch(waves)):
                if got.shape != (want, extractor.dim):
                    raise RuntimeError(f"{rel}: features {got.shape}, expected ({want}, {extractor.dim})")
                feats[offset: offset + want] = got
                offset += want
            bar.update(j - i)
    feats.flush()
    del feats
    write_lengths(lens, expected)
    return expected


def shard_job(cfg: FeatureConfig, manifest: str, split: str, rank: int, out_dir: str, sample_rate: int,
              checkpoint: str | None) -> list[int]:
    """One shard as a job of its own (another process or machine): its own extractor, every core of its own."""
    torch.set_num_threads(usable_cpus())
    extractor = make_extractor(cfg, sample_rate, checkpoint)
    return dump_shard(manifest, split, rank, cfg.nshard, out_dir, extractor, sample_rate, cfg.max_batch_samples,
                      False, cfg.dtype)


def dump_split_submitit(manifest: str | Path, split: str, out_dir: str | Path, cfg: FeatureConfig,
                        sample_rate: int, checkpoint: str | Path | None = None) -> list[int]:
    """Every shard of one split as a submitit job (a SLURM array, or local processes), waiting for all.

    The jobs write the same ``{split}_{rank}_{nshard}`` files as the local path; a
    failed shard is an error naming the shard and its log."""
    import submitit

    launcher = cfg.launcher
    folder = Path(launcher.folder) / f"{Path(out_dir).name}_{split}"
    executor = submitit.AutoExecutor(folder=folder, cluster=None if launcher.cluster == "auto" else launcher.cluster)
    executor.update_parameters(name=f"features_{split}", timeout_min=launcher.timeout_min,
                               cpus_per_task=launcher.cpus_per_task, gpus_per_node=launcher.gpus_per_node,
                               mem_gb=launcher.mem_gb, slurm_array_parallelism=launcher.array_parallelism,
                               **({"slurm_partition": launcher.slurm_partition} if launcher.slurm_partition else {}))
    ranks = list(range(cfg.nshard))
    n = len(ranks)
    jobs = executor.map_array(shard_job, [cfg] * n, [str(manifest)] * n, [split] * n, ranks,
                              [str(out_dir)] * n, [sample_rate] * n, [str(checkpoint) if checkpoint else None] * n)
    print(f"features {split}: {n} submitit jobs ({executor.cluster}), logs in {folder}")
    results = []
    for rank, job in zip(ranks, jobs, strict=True):
        try:
            results.append(job.result())
        except Exception as exc:  # submitit re-raises the job's failure with the job's whole traceback
            errors = [line for line in str(exc).splitlines() if re.match(r"^\w+(Error|Exception): ", line)]
            raise RuntimeError(f"features {split} shard {rank}/{n} failed in submitit job {job.job_id} (logs: "
                               f"{job.paths.stderr}): {errors[-1] if errors else exc}") from exc
    return [frames for lengths in results for frames in lengths]


def dump_split(manifest: str | Path, split: str, out_dir: str | Path, cfg: FeatureConfig, sample_rate: int,
               checkpoint: str | Path | None = None, extractor: Extractor | None = None,
               progress: bool = True) -> list[int]:
    """All ``cfg.nshard`` shards of one split, ``cfg.workers`` at a time (or one submitit job
    each: :func:`dump_split_submitit`); returns frames per distinct utterance, in the order
    of their first manifest line.

    Workers are joblib threads sharing one extractor (one model in memory, no
    process start-up: at demo size the whole MFCC dump takes seconds, less than
    starting and importing torch in worker processes). torch's intra-op threads
    are pinned to cores // workers while they run, so the workers do not
    oversubscribe the cores (which makes them several times slower); the
    torch calls release the GIL, and grouped extraction leaves little Python
    time per second of audio.
    """
    from joblib import Parallel, delayed

    if cfg.launcher.kind == "submitit":
        return dump_split_submitit(manifest, split, out_dir, cfg, sample_rate, checkpoint)
    extractor = extractor or make_extractor(cfg, sample_rate, checkpoint)
    jobs = min(cfg.workers, cfg.nshard)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, usable_cpus() // jobs))
    try:
        results = Parallel(n_jobs=jobs, backend="threading")(
            delayed(dump_shard)(manifest, split, rank, cfg.nshard, out_dir, extractor, sample_rate,
                                cfg.max_batch_samples, progress, cfg.dtype)
            for rank in range(cfg.nshard))
    finally:
        torch.set_num_threads(previous)
    return [n for lengths in results for n in lengths]


def resolve_layer(cfg: FeatureConfig, layer_choice: str | Path | None) -> FeatureConfig:
    """``layer: auto`` replaced by the layer the sweep chose (its ``choice.json``)."""
    if cfg.layer != AUTO:
        return cfg
    if layer_choice is None or not Path(layer_choice).is_file():
        raise FileNotFoundError(f"features.layer is auto but the layer sweep's choice {layer_choice} is missing; "
                                "run the layers stage first (dvc repro does), or set features.layer to a number")
    choice = json.loads(Path(layer_choice).read_text(encoding="utf-8"))
    print(f"features: layer {choice['layer']} ({choice['why']}, from {layer_choice})")
    return dataclasses.replace(cfg, layer=int(choice["layer"]))


def dump_features(cfg: FeatureConfig, manifests: str | Path, out_dir: str | Path, sample_rate: int,
                  checkpoint: str | Path | None = None,
                  layer_choice: str | Path | None = None) -> dict[str, dict[str, float]]:
    """The features stage: every split of ``cfg.splits`` dumped into ``out_dir`` (rebuilt
    whole: no shards left over from another nshard or split list). Returns per split
    utterances, frames and seconds."""
    manifests, out_dir = Path(manifests), Path(out_dir)
    cfg = resolve_layer(cfg, layer_choice)
    extractor = make_extractor(cfg, sample_rate, checkpoint)  # fails before the old outputs are removed
    missing = [s for s in cfg.splits if not (manifests / f"{s}.tsv").is_file()]
    if missing:
        raise FileNotFoundError(f"{manifests / missing[0]}.tsv does not exist; features.splits names a split the "
                                "balance stage did not write (train, valid, test, finetune)")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    summary = {}
    for split in cfg.splits:
        start = time.perf_counter()
        frames = dump_split(manifests / f"{split}.tsv", split, out_dir, cfg, sample_rate, checkpoint, extractor)
        summary[split] = {"utterances": len(frames), "frames": sum(frames),
                          "seconds": round(time.perf_counter() - start, 2)}
    return summary
