"""Checks on pseudo-label files before anything consumes them, and the label rate.

fairseq only warns (or fails deep inside training) on the classic mistakes:
labels from another run or unconcatenated shards ("number of labels does not
match"), a wrong ``label_rate`` ("audio and label duration differ too much"),
a dictionary appended twice or left empty (every label becomes <unk>, the loss
collapses). Each check here raises a :class:`LabelError` subclass (or, for a
dictionary, hubert.fairseq.formats.DictionaryError) naming the file and the fix.
:func:`check_labels` runs them all; pretraining calls it.

The label rate is not typed anywhere: :func:`estimate_frame_rate` derives it
from dumped frame counts against audio lengths, the kmeans stage records it in
``label_rate.json`` beside the labels (:func:`write_label_rate`), and
pretraining reads it back with :func:`read_label_rate`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hubert.fairseq.formats import DictionaryError, read_dict, read_label_lines, read_tsv

LABEL_RATE_FILE = "label_rate.json"
TOLERANCE_S = 0.1  # fairseq hubert_dataset.verify_label_lengths: tol=0.1 seconds


class LabelError(ValueError):
    """Labels that must not be used as they are."""


class LabelCountError(LabelError):
    pass


class LabelLengthError(LabelError):
    pass


class LabelRateError(LabelError):
    pass


# ---------------------------------------------------------------- label rate
def estimate_frame_rate(frames: list[int] | np.ndarray, num_samples: list[int] | np.ndarray,
                        sample_rate: int, window_s: float = 0.025) -> float:
    """Frames per second of a feature dump, rounded to an integer.

    Frame-based features (Kaldi MFCC with snip_edges, HuBERT's CNN) give
    floor((seconds - window) * rate) + 1 frames for a window of 25 ms (400
    samples at 16 kHz for both), so frames / seconds alone runs low on short
    utterances (1.5 s of MFCC is 148 frames); summing (frames - 1/2) over
    (seconds - window) undoes the edge and, on average, the floor.
    """
    f = np.asarray(frames, dtype=np.float64)
    s = np.asarray(num_samples, dtype=np.float64) / sample_rate
    if len(f) == 0 or len(f) != len(s):
        raise ValueError(f"need frame counts for every utterance ({len(f)} frames vs {len(s)} lengths)")
    return float(round((f - 0.5).sum() / (s - window_s).sum()))


def write_label_rate(label_dir: str | Path, label_rate: float, frames: int, seconds: float) -> Path:
    """``label_rate.json``: {"label_rate": 100.0, "frames": ..., "audio_seconds": ...} (numbers only)."""
    path = Path(label_dir) / LABEL_RATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"label_rate": float(label_rate), "frames": int(frames),
                                "audio_seconds": round(float(seconds), 3)}, indent=2) + "\n", encoding="utf-8")
    return path


def read_label_rate(label_dir: str | Path) -> float:
    """The label rate recorded by the kmeans stage (``label_dir/label_rate.json``)."""
    path = Path(label_dir) / LABEL_RATE_FILE
    if not path.is_file():
        raise LabelRateError(f"{path} does not exist; the kmeans stage writes it beside the labels: re-run it")
    return float(json.loads(path.read_text(encoding="utf-8"))["label_rate"])


# ---------------------------------------------------------------- readers
def _manifest_lengths(manifest_tsv: Path) -> list[int]:
    try:
        return [n for _, n in read_tsv(manifest_tsv)[1]]
    except ValueError as exc:
        raise LabelCountError(f"{manifest_tsv}: not a fairseq manifest (root line, then path<TAB>num_samples); "
                              "rebuild it with the balance stage") from exc


# ---------------------------------------------------------------- checks
def check_label_count(manifest_tsv: str | Path, km_file: str | Path) -> int:
    """One label line per manifest line. Returns the count."""
    manifest_tsv, km_file = Path(manifest_tsv), Path(km_file)
    n_audio = len(_manifest_lengths(manifest_tsv))
    n_labels = len(read_label_lines(km_file))
    if n_audio != n_labels:
        raise LabelCountError(
            f"{km_file}: {n_labels} label lines but {manifest_tsv} lists {n_audio} utterances; the labels come "
            "from another manifest or from unconcatenated shards: re-run the features and kmeans stages "
            "on these manifests")
    return n_labels


def check_label_lengths(manifest_tsv: str | Path, km_file: str | Path, label_rate: float,
                        sample_rate: int = 16000, tol: float = TOLERANCE_S) -> None:
    """|num_samples / sample_rate - labels / label_rate| <= tol seconds on every line (fairseq's tolerance)."""
    manifest_tsv, km_file = Path(manifest_tsv), Path(km_file)
    samples = np.asarray(_manifest_lengths(manifest_tsv), dtype=np.float64)
    counts = np.asarray([len(x) for x in read_label_lines(km_file)], dtype=np.float64)
    if len(samples) != len(counts):
        check_label_count(manifest_tsv, km_file)
    seconds = samples / sample_rate
    bad = np.flatnonzero(np.abs(seconds - counts / label_rate) > tol)
    if len(bad):
        implied = estimate_frame_rate(counts, samples, sample_rate)
        i = int(bad[0])
        raise LabelLengthError(
            f"{km_file}: {len(bad)} of {len(counts)} lines differ from their audio by more than {tol} s at "
            f"label_rate={label_rate:g} (line {i + 1}: {seconds[i]:.3f} s of audio, {int(counts[i])} labels = "
            f"{counts[i] / label_rate:.3f} s). The labels look like {implied:g} Hz: set label_rate to the "
            f"rate in {LABEL_RATE_FILE} beside them, or re-run the kmeans stage if they are stale")


def check_dictionary(km_file: str | Path, dict_file: str | Path) -> int:
    """dict has one line per unit 0..K-1 and covers every label (max label < K). Returns K."""
    km_file, dict_file = Path(km_file), Path(dict_file)
    symbols = read_dict(dict_file)
    if not symbols:
        raise DictionaryError(f"{dict_file} is empty: every label would map to <unk> and the loss collapses "
                              "to 0; re-run the kmeans stage to write it")
    if symbols != [str(i) for i in range(len(symbols))]:
        raise DictionaryError(f"{dict_file}: symbols are not the units 0..{len(symbols) - 1} in order; "
                              "re-run the kmeans stage to rewrite it")
    max_label = -1
    for lineno, units in enumerate(read_label_lines(km_file), 1):
        if not units:
            continue
        try:
            top = max(int(u) for u in units)
        except ValueError as exc:
            raise DictionaryError(f"{km_file}:{lineno}: non-integer label ({exc}); re-run the kmeans stage") from exc
        if min(int(u) for u in units) < 0:
            raise DictionaryError(f"{km_file}:{lineno}: negative label; re-run the kmeans stage")
        max_label = max(max_label, top)
    if max_label >= len(symbols):
        raise DictionaryError(f"{km_file}: max label {max_label} but {dict_file} has {len(symbols)} units "
                              f"(0..{len(symbols) - 1}); labels and dictionary come from different k-means "
                              "runs: re-run the kmeans stage")
    return len(symbols)


def check_label_rate(label_rate: float, feature_rate: float, where: str | Path) -> None:
    """The label_rate given to training must equal the frame rate of the clustered features."""
    if abs(float(label_rate) - float(feature_rate)) > 1e-6:
        raise LabelRateError(
            f"{where}: label_rate={label_rate:g} but the labels were made from {feature_rate:g} Hz features "
            f"(100 for MFCC, 50 for HuBERT layers); set label_rate={feature_rate:g}")


def check_labels(manifest_tsv: str | Path, km_file: str | Path, dict_file: str | Path, label_rate: float,
                 sample_rate: int = 16000) -> dict[str, float]:
    """Every check, cheapest first. The recorded feature rate comes from
    ``label_rate.json`` beside ``km_file`` (skipped when the labels have none,
    e.g. labels made elsewhere: the length check still catches a wrong rate).

    Returns {"utterances": N, "n_clusters": K, "label_rate": rate}.
    """
    km_file = Path(km_file)
    n = check_label_count(manifest_tsv, km_file)
    k = check_dictionary(km_file, dict_file)
    if (km_file.parent / LABEL_RATE_FILE).is_file():
        check_label_rate(label_rate, read_label_rate(km_file.parent), km_file.parent / LABEL_RATE_FILE)
    check_label_lengths(manifest_tsv, km_file, label_rate, sample_rate)
    return {"utterances": n, "n_clusters": k, "label_rate": float(label_rate)}
