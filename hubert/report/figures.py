"""The report's figures: matplotlib on the Agg backend, PNG without a Software
stamp, so the same numbers give byte-identical files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from hubert.labels.quality import chance_bits  # noqa: E402
from hubert.report.curves import Curves  # noqa: E402
from hubert.report.findings import REFERENCES  # noqa: E402

STYLE = {"figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "hubert-dvc"}


def save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def loss_figure(runs: dict[str, tuple[int, Curves, float | None, int | None]], path: Path) -> Path:
    """One panel per run: train and valid (per language) masked loss in bits, the chance
    level log2(K+4), the label prior H(z), the feature penalty apart, and the published
    reference for that iteration as dashed levels. ``runs``: title -> (K, curves, prior, iteration)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.4), squeeze=False)
        for ax, (title, (units, curves, prior, iteration)) in zip(axes[0], runs.items(), strict=True):
            for split in ["train", *curves.valid_splits()]:
                c = curves.get(split, "loss_m")
                if c is not None:
                    ax.plot(c.steps, c.values, label=f"{split} masked loss", lw=1.2 if split == "train" else 1.0,
                            marker=None if split == "train" else ".")
            pen = curves.get("train", "features_pen")
            if pen is not None:
                ax.plot(pen.steps, pen.values, color="grey", lw=0.8, label="feature penalty (not in the masked loss)")
            ax.axhline(chance_bits(units), color="red", ls=":", label=f"chance log2({units}+4)")
            if prior is not None:
                ax.axhline(prior, color="purple", ls="--", lw=0.8, label="label prior H(z)")
            for i, ref in enumerate(REFERENCES.get(iteration, ()) if iteration else ()):
                if ref.units == units:
                    ax.axhline(ref.loss_m, color="black", ls=(0, (2, 4)), lw=0.7)
                    ax.annotate(f"LibriSpeech Base, {ref.updates // 1000}k updates", (0.99, ref.loss_m),
                                xycoords=("axes fraction", "data"), ha="right", va="bottom" if i == 0 else "top",
                                fontsize=7)
            ax.set_title(title)
            ax.set_xlabel("updates")
            ax.set_ylabel("bits")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        return save(fig, path)


def normalised_figure(runs: dict[str, tuple[int, Curves, float | None, int | None]], path: Path) -> Path:
    """Masked loss / log2(K+4) of every run on one axis, with the references' end points."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for title, (units, curves, _, iteration) in runs.items():
            c = curves.get("train", "loss_m")
            if c is None:
                continue
            line, = ax.plot(c.steps, c.values / chance_bits(units), label=title)
            for ref in REFERENCES.get(iteration, ()) if iteration else ():
                ax.axhline(ref.over_chance, color=line.get_color(), ls=(0, (2, 4)), lw=0.7)
        ax.axhline(1.0, color="red", ls=":", label="chance")
        ax.set_xlabel("updates")
        ax.set_ylabel("masked loss / log2(K+4)")
        ax.set_ylim(0, 1.1)
        ax.set_title("normalised masked loss (dashed: LibriSpeech Base at 250k / 400k updates)")
        ax.legend(fontsize=7)
        return save(fig, path)


def training_figure(runs: dict[str, Curves], path: Path) -> Path:
    """Masked accuracy, learning rate and throughput (audio seconds per second, or
    updates per second for a foreign log) of every run."""
    panels = (("accuracy_m", "masked accuracy"), ("lr", "learning rate"),
              ("audio_s_per_s", "audio s per s"), ("ups", "updates per s"))
    present = [(n, t) for n, t in panels if any(c.get("train", n) is not None for c in runs.values())]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(present), figsize=(3.6 * len(present), 3.0), squeeze=False)
        for ax, (name, label) in zip(axes[0], present, strict=True):
            for title, curves in runs.items():
                for split in ["train", *curves.valid_splits()] if name == "accuracy_m" else ["train"]:
                    c = curves.get(split, name)
                    if c is not None:
                        ax.plot(c.steps, c.values, label=f"{title} {split}" if name == "accuracy_m" else title,
                                lw=1.0, marker=None if split == "train" else ".")
            ax.set_title(label)
            ax.set_xlabel("updates")
            ax.legend(fontsize=6)
        return save(fig, path)


def labels_figure(labels: dict[int, dict], layers: dict | None, path: Path) -> Path:
    """PNMI per iteration and language against the shuffled floors; the layer sweep
    against MFCC at the same K and frame rate."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2 if layers else 1, figsize=(10 if layers else 5.2, 3.4), squeeze=False)
        ax = axes[0][0]
        names = [f"iteration {it}\nK={m['n_clusters']} {m['label_rate']:g} Hz" for it, m in sorted(labels.items())]
        langs = sorted({lang for m in labels.values() for lang in m.get("per_language", {})})
        groups = [("all", lambda m: m["pnmi_conditional"], lambda m: m["pnmi_conditional_shuffled"])]
        nan = float("nan")  # a language without alignments in one label set draws no bar there
        groups += [(lang, lambda m, lang=lang: m["per_language"].get(lang, {}).get("pnmi", nan),
                    lambda m, lang=lang: m["per_language"].get(lang, {}).get("pnmi_shuffled", nan))
                   for lang in langs]
        width = 0.8 / len(groups)
        for g, (name, value, floor) in enumerate(groups):
            xs = [i + g * width for i in range(len(names))]
            ms = [m for _, m in sorted(labels.items())]
            ax.bar(xs, [value(m) for m in ms], width, label=name)
            ax.bar(xs, [floor(m) for m in ms], width, color="black", alpha=0.5)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
        ax.set_ylabel("PNMI (black: shuffled floor)")
        ax.set_title("label quality")
        ax.legend(fontsize=7)
        if layers:
            ax = axes[0][1]
            keys = sorted(layers["pnmi_conditional"], key=lambda k: int(k.split("_")[1]))
            xs = [int(k.split("_")[1]) for k in keys]
            line = ax.errorbar(xs, [layers["pnmi_conditional"][k] for k in keys],
                               yerr=[layers["pnmi_conditional_std"][k] for k in keys], marker="o",
                               label="layer, all").lines[0]
            mfcc = layers["mfcc_at_layer_rate"]
            ax.axhline(mfcc["pnmi_conditional"], color=line.get_color(), ls="--",
                       label=f"MFCC at {layers['label_rate']:g} Hz, all")
            for lang in ("en", "zh"):
                if f"pnmi_{lang}" in layers:
                    lang_line, = ax.plot(xs, [layers[f"pnmi_{lang}"][k] for k in keys], marker=".", lw=0.8,
                                         label=f"layer, {lang}")
                    if f"pnmi_{lang}" in mfcc:
                        ax.axhline(mfcc[f"pnmi_{lang}"], color=lang_line.get_color(), ls="--", lw=0.8,
                                   label=f"MFCC, {lang}")
            ax.set_xticks(xs)
            ax.set_xlabel("transformer layer of the iteration-1 model")
            ax.set_ylabel(f"PNMI, K={layers['n_clusters']}")
            ax.set_title("layer sweep (dashed: MFCC at the same K and rate)")
            ax.legend(fontsize=6, ncol=2)
        return save(fig, path)


def downstream_figure(evaluation: dict, path: Path) -> Path:
    """zh CER and en WER (percent) of every fine-tuned variant with their 95% intervals, and the
    constant-output floors. Error rates pass 100% (insertions), so the axis reaches the highest
    interval and every bar carries its value."""
    variants = [v for v in evaluation if v not in ("floors", "compare")]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        for ax, (lang, metric) in zip(axes, (("zh", "cer"), ("en", "wer")), strict=True):
            rows = [(v, evaluation[v][lang][metric]) for v in variants
                    if metric in evaluation[v].get(lang, {})]
            xs = range(len(rows))
            rates = [100 * r["rate"] for _, r in rows]
            bars = ax.bar(xs, rates, yerr=[[100 * (r["rate"] - r["low"]) for _, r in rows],
                                           [100 * (r["high"] - r["rate"]) for _, r in rows]], capsize=3)
            ax.bar_label(bars, labels=[f"{x:.1f}" for x in rates], fontsize=7, padding=2)
            floor = evaluation.get("floors", {}).get(lang, {}).get(f"constant_{metric}")
            if floor is not None:
                ax.axhline(100 * floor, color="red", ls="--", label="constant output")
                ax.legend(fontsize=7)
            ax.set_xticks(list(xs), [v for v, _ in rows], rotation=30, ha="right")
            ax.set_ylabel(f"{lang} {metric.upper()} (%)")
            top = max([100 * r["high"] for _, r in rows] + [100 * floor if floor is not None else 0, 100])
            ax.set_ylim(0, 1.1 * top)
            ax.set_title(f"{lang} {metric.upper()} on held-out voices (95% interval)")
        return save(fig, path)
