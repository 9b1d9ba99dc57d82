"""The layer sweep (stage layers_iter1): which transformer layer of a HuBERT
checkpoint gives the best labels?

For every layer 1..L of the checkpoint and for ``labels.sweep.seeds`` k-means
seeds: k-means with labels.<iteration>.kmeans (the K and settings of that
iteration's labels) fitted on the layer's features of a seeded draw of distinct
train utterances, then the label quality (hubert.labels.quality:
language-conditional PNMI as the headline, per-language and language-prefixed
PNMI, purities, the shuffled floor) of a draw of the valid utterances (every
one by default), voices k-means never saw. Each score is the mean over seeds, the
headline's sample std beside it: the best layer is the highest mean, and
``seed_spread`` says how far apart layers must be to differ. MFCC clustered the
same way on the same utterances is the baseline at the same K (PNMI grows with
K), scored at its own 100 Hz and decimated to the layers' 50 Hz (the fair
comparison: PNMI depends on the frame rate too).

One forward pass per utterance gives every layer
(HubertFeatureReader.get_feats_all_layers); the draw is dumped with
hubert.labels.features.dump_split into a temporary folder (frames x dim x
layers x 4 bytes), and the (L + 1) x seeds k-means fits run in parallel
processes of one thread each.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from joblib import Parallel, delayed

from hubert.corpus.records import Utterance, lookup_utterances
from hubert.fairseq.formats import iter_shards, read_tsv, write_tsv
from hubert.labels.features import dump_split, usable_cpus
from hubert.labels.hubert_layers import HubertFeatureReader
from hubert.labels.kmeans import assign, fit_kmeans
from hubert.labels.mfcc import MfccExtractor
from hubert.labels.params import FeatureConfig, KMeansConfig, LabelsIteration, SweepConfig
from hubert.labels.quality import UttLabels, label_quality

SCORES = ("pnmi_conditional", "pnmi_per_language_mean", "pnmi_prefixed", "pnmi_conditional_shuffled",
          "phone_purity", "cluster_purity")
SPLIT = "sweep"  # the temporary manifest's split name


class Drawn(NamedTuple):
    split: str
    rel: str  # as in the manifest and the corpus's manifest.jsonl
    path: str  # the manifest's root joined with rel
    num_samples: int


def distinct_utterances(manifests: Path, splits: tuple[str, ...]) -> list[Drawn]:
    """Each audio file of the splits' manifests once (train's balanced list repeats lines), in file order."""
    seen: set[str] = set()
    out = []
    for split in splits:
        root, rows = read_tsv(manifests / f"{split}.tsv")
        for rel, n in rows:
            if rel not in seen:
                seen.add(rel)
                out.append(Drawn(split, rel, os.path.join(root, rel), n))
    return out


def draw(utts: list[Drawn], fit_utterances: int, scored_utterances: int, seed: int) -> list[Drawn]:
    """The seeded draws: up to fit_utterances train utterances, then up to scored_utterances of
    the others (-1 = all), each in file order. Train comes first: the fit frames are then a
    prefix of every feature array."""
    rng = np.random.default_rng(seed)
    out = []
    for part, cap in (([u for u in utts if u.split == "train"], fit_utterances),
                      ([u for u in utts if u.split != "train"], scored_utterances)):
        if cap != -1 and cap < len(part):
            part = [part[i] for i in np.sort(rng.choice(len(part), size=cap, replace=False))]
        out += part
    return out


class AllLayers:
    """Every layer of a HubertFeatureReader side by side, (frames, n_layers * dim): the extractor
    interface of hubert.labels.features.dump_split; layer l is columns [(l - 1) * dim, l * dim)."""

    def __init__(self, reader: HubertFeatureReader) -> None:
        self.reader = reader
        self.frame_rate = reader.frame_rate
        self.dim = reader.n_layers * reader.dim

    def num_frames(self, num_samples: int) -> int:
        return self.reader.num_frames(num_samples)

    def get_feats_batch(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        # (n_layers, frames, dim) -> (frames, n_layers * dim)
        return [np.concatenate(self.reader.get_feats_all_layers(w), axis=1) for w in waveforms]


def flat_scores(quality: dict) -> dict[str, float]:
    """The sweep's numbers from a label_quality result: SCORES and each language's PNMI."""
    out = {name: quality[name] for name in SCORES}
    out.update({f"pnmi_{lang}": block["pnmi"] for lang, block in quality["per_language"].items() if "pnmi" in block})
    if "toneless" in quality:  # tonal phones: the same scores with the tones removed, beside them
        plain = quality["toneless"]
        out.update({f"toneless_{name}": plain[name] for name in SCORES})
        out.update({f"toneless_pnmi_{lang}": block["pnmi"] for lang, block in plain["per_language"].items()
                    if "pnmi" in block})
    return out


def score(feat_dir: Path, columns: slice, fit_frames: int, lengths: list[int], meta: list[Utterance],
          rate: float, cfg: KMeansConfig, n_fit: int, eval_rates: tuple[float, ...] = ()) -> list[dict[str, float]]:
    """k-means (cfg, its seed) on the first fit_frames frames of feat_dir's columns (the train
    utterances of the draw), then the label quality of the other utterances (held-out voices).

    Returns the scores at the features' own rate, then at each of eval_rates (an integer
    divisor of rate): the same labels decimated, so that label sets of different frame
    rates are compared at one rate (PNMI depends on the frame rate as well as on K).
    """
    feats = np.concatenate([np.asarray(f[:, columns], dtype=np.float32)
                            for f, _ in iter_shards(feat_dir, SPLIT)])  # (frames, dim)
    model = fit_kmeans(feats[:fit_frames], cfg)
    units, _ = assign(model, feats[fit_frames:])
    per_utt = np.split(units, np.cumsum(lengths[n_fit:])[:-1])
    out = []
    for r in (rate, *eval_rates):
        step = round(rate / r)
        if step < 1 or abs(rate / step - r) > 1e-6:
            raise ValueError(f"cannot evaluate {rate} Hz labels at {r} Hz: not an integer divisor")
        quality = label_quality([UttLabels(u.lang, u.alignment, z[::step]) for u, z in zip(meta[n_fit:], per_utt)],
                                r, cfg.n_clusters, cfg.seed)
        out.append(flat_scores(quality))
    return out


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean over k-means seeds of each score, and the spread (sample std) of the headline."""
    out = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
    headline = [r["pnmi_conditional"] for r in runs]
    out["pnmi_conditional_std"] = round(float(np.std(headline, ddof=1)), 4) if len(runs) > 1 else 0.0
    return out


def toneless_headline(per_layer: dict[int, dict], mfcc_at_layer_rate: dict) -> dict:
    """With tonal phones: the best layer and its margin over MFCC by the toneless inventory."""
    key = "toneless_pnmi_conditional"
    if key not in mfcc_at_layer_rate:
        return {}
    best = max(per_layer, key=lambda layer: per_layer[layer][key])
    return {"toneless_best_layer": best, "toneless_best_pnmi": per_layer[best][key],
            "toneless_best_minus_mfcc_at_layer_rate": round(per_layer[best][key] - mfcc_at_layer_rate[key], 4)}


def chosen_layer(metrics: dict) -> tuple[int, str]:
    """The layer iteration 2 clusters when labels.iter2.features.layer is auto: the sweep's best,
    or, without alignments to rank them, the middle layer (HuBERT Base's recipe: 6 of 12)."""
    if "best_layer" in metrics:
        return metrics["best_layer"], (f"best language-conditional PNMI over {metrics['seeds']} k-means seeds: "
                                       f"{metrics['best_pnmi']} (spread {metrics['seed_spread']})")
    middle = max(1, metrics["n_layers"] // 2)
    return middle, f"no phone alignments to rank the layers: the middle layer, {middle} of {metrics['n_layers']}"


def sweep_layers(it: LabelsIteration, sweep: SweepConfig, checkpoint: str | Path, manifests: str | Path,
                 corpus: str | Path, sample_rate: int) -> dict:
    """The layers stage: every layer of ``checkpoint`` clustered with ``it.kmeans`` and
    scored beside MFCC on one seeded draw; returns the metrics (numbers only)."""
    manifests, corpus = Path(manifests), Path(corpus)
    start = time.perf_counter()

    # layer 1 only satisfies the constructor: get_feats_all_layers returns them all
    reader = HubertFeatureReader(checkpoint, 1, it.features.device, it.features.chunk_samples)
    if reader.sample_rate != sample_rate:
        raise ValueError(f"{checkpoint}: trained at {reader.sample_rate} Hz but corpus.sample_rate={sample_rate}")

    utts = draw(distinct_utterances(manifests, ("train", "valid")), sweep.fit_utterances, sweep.scored_utterances,
                sweep.seed)
    meta = lookup_utterances(corpus, [u.rel for u in utts], f"{manifests}/{{train,valid}}.tsv")
    n_fit = sum(u.split == "train" for u in utts)
    counts = {"n_layers": reader.n_layers, "n_clusters": it.kmeans.n_clusters, "label_rate": reader.frame_rate,
              "utterances": len(utts), "aligned_utterances": sum(m.alignment is not None for m in meta),
              "fit_utterances": n_fit}
    if n_fit == 0 or n_fit == len(utts):
        raise ValueError(f"{manifests}: the sweep drew {n_fit} train and {len(utts) - n_fit} valid utterances: "
                         "k-means is fitted on train and scored on valid, so it needs both (valid voices: "
                         "balance.valid_speakers)")
    if not any(m.alignment is not None for m in meta[n_fit:]):
        # PNMI and purities need phones: without alignments there is nothing to rank the layers by
        print(f"layers: no alignments: none of the {len(utts) - n_fit} drawn valid utterances (the scored ones) "
              f"has phones in {corpus}/manifest.jsonl, so PNMI, purities and the best layer are absent; import "
              "alignments for valid too (corpus.imports[].alignments) to rank the layers")
        return counts
    print(f"layers: {reader.n_layers} layers x {len(utts)} utterances ({n_fit} fit k-means, "
          f"{sum(u.num_samples for u in utts) / sample_rate / 3600:.2f} h), K={it.kmeans.n_clusters}")

    with tempfile.TemporaryDirectory(prefix="layers_") as tmp:
        tsv = Path(tmp) / f"{SPLIT}.tsv"
        write_tsv(tsv, ".", ((u.path, u.num_samples) for u in utts))
        workers = min(it.features.workers, len(utts))  # one shard per worker thread, none empty
        hubert_dir, mfcc_dir = Path(tmp) / "hubert", Path(tmp) / "mfcc"
        # one utterance per forward (max_batch_samples 0): the values never depend on the grouping
        all_layers_cfg = dataclasses.replace(it.features, nshard=workers, max_batch_samples=0, dtype="float32")
        lengths = dump_split(tsv, SPLIT, hubert_dir, all_layers_cfg, sample_rate, extractor=AllLayers(reader))
        mfcc = MfccExtractor(sample_rate)
        mfcc_lengths = dump_split(tsv, SPLIT, mfcc_dir, FeatureConfig(nshard=workers, workers=workers), sample_rate,
                                  extractor=mfcc)
        print(f"layers: features of every layer and MFCC in {time.perf_counter() - start:.1f} s")
        dim = reader.dim
        seeds = [dataclasses.replace(it.kmeans, seed=it.kmeans.seed + k) for k in range(sweep.seeds)]
        jobs = [(layer, hubert_dir, slice((layer - 1) * dim, layer * dim), lengths, reader.frame_rate, (), cfg)
                for layer in range(1, reader.n_layers + 1) for cfg in seeds]
        # MFCC is scored at its own 100 Hz and, decimated, at the layers' 50 Hz: the fair comparison
        jobs += [("mfcc", mfcc_dir, slice(None), mfcc_lengths, mfcc.frame_rate, (reader.frame_rate,), cfg)
                 for cfg in seeds]
        # one fit per process, each pinned to one thread by joblib (cores // jobs): independent fits in
        # parallel rather than one fit's threads meeting at barriers
        results = Parallel(n_jobs=min(usable_cpus(), len(jobs)), backend="loky")(
            delayed(score)(d, cols, sum(lens[:n_fit]), lens, meta, rate, cfg, n_fit, also)
            for _, d, cols, lens, rate, also, cfg in jobs)
    by_key: dict = {}
    for (key, *_), result in zip(jobs, results):
        by_key.setdefault(key, []).append(result)
    per_layer = {layer: summarise([r[0] for r in by_key[layer]]) for layer in range(1, reader.n_layers + 1)}
    baseline = summarise([r[0] for r in by_key["mfcc"]])
    baseline_at_layer_rate = summarise([r[1] for r in by_key["mfcc"]])
    best = max(per_layer, key=lambda layer: per_layer[layer]["pnmi_conditional"])  # ties: the lower layer
    headline = per_layer[best]["pnmi_conditional"]
    return {
        **{name: {f"layer_{layer}": s[name] for layer, s in per_layer.items()} for name in per_layer[best]},
        "best_layer": best,
        "best_pnmi": headline,
        "seeds": sweep.seeds,
        "seed_spread": max(s["pnmi_conditional_std"] for s in [*per_layer.values(), baseline_at_layer_rate]),
        "mfcc": baseline,
        "mfcc_at_layer_rate": baseline_at_layer_rate,
        "best_minus_mfcc": round(headline - baseline["pnmi_conditional"], 4),
        "best_minus_mfcc_at_layer_rate": round(headline - baseline_at_layer_rate["pnmi_conditional"], 4),
        **toneless_headline(per_layer, baseline_at_layer_rate),
        **counts,
        "scored_utterances": len(utts) - n_fit,
        "frames": sum(lengths),
        "fit_frames": sum(lengths[:n_fit]),
    }
