"""fairseq's on-disk formats, read and written in one place (no torch import).

- Manifest ``{split}.tsv``: the audio root directory on the first line, then
  ``relative/path<TAB>num_samples`` per utterance. Beside it, line-aligned
  ``{split}.<ext>`` text files (ours: ``.lang`` language tags, ``.wrd``
  transcripts, as wav2vec 2.0's recipes name them).
- Labels ``{split}.km``: one line per manifest line, space-separated ints.
- Dictionary ``dict.{label}.txt``: one ``symbol count`` line per symbol;
  fairseq's Dictionary adds its 4 specials (<s> <pad> </s> <unk>) itself.
- Features ``{split}_{rank}_{nshard}.npy`` ((frames, dim), the shard's
  utterances concatenated) + ``.len`` (frames per utterance), sharded by
  fairseq's rule (:func:`shard_range`). Ours hold each distinct utterance of the
  manifest once (:func:`distinct_rows`); for a manifest without repeats that is
  fairseq's layout line for line.

Files that a re-run must replace (labels, dictionaries) are written whole
through a temporary file and a rename, never appended to.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np


class DictionaryError(ValueError):
    """A ``dict.*.txt`` that fairseq would misread."""


# ---------------------------------------------------------------- manifests
def read_tsv(path: str | Path) -> tuple[str, list[tuple[str, int]]]:
    """fairseq manifest -> (root line, [(relative path, num_samples), ...]) in file order."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{path}: empty manifest; the first line must be the audio root directory")
    rows = []
    for lineno, line in enumerate(lines[1:], 2):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'relative/path<TAB>num_samples', got {line!r}; "
                             "rebuild the manifests with the balance stage")
        rows.append((parts[0], int(parts[1])))
    return lines[0], rows


def distinct_rows(rows: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], np.ndarray]:
    """(each distinct row once, in the order of its first line; for every line, the index of its
    row there). A balanced pretraining list repeats utterances: features are dumped once per
    distinct row, and labels expanded back to every line."""
    index: dict[str, int] = {}
    for rel, _ in rows:
        index.setdefault(rel, len(index))
    firsts = {rel: n for rel, n in reversed(rows)}
    return [(rel, firsts[rel]) for rel in index], np.asarray([index[rel] for rel, _ in rows], dtype=np.int64)


def write_tsv(path: str | Path, root: str, rows: Iterable[tuple[str, int]]) -> None:
    """The manifest :func:`read_tsv` reads back."""
    write_whole(path, root + "\n" + "".join(f"{rel}\t{n}\n" for rel, n in rows))


def write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """A line-aligned side file of a manifest (``.lang``, ``.wrd``): one line per manifest line."""
    write_whole(path, "".join(f"{line}\n" for line in lines))


# ---------------------------------------------------------------- labels and dictionaries
KM = "km"  # the label set of k-means units: {split}.km and dict.km.txt


def label_file(label_dir: str | Path, split: str, label: str = KM) -> Path:
    """``{split}.{label}``: what fairseq's task.labels=[label] reads from task.label_dir."""
    return Path(label_dir) / f"{split}.{label}"


def dict_file(label_dir: str | Path, label: str = KM) -> Path:
    """``dict.{label}.txt``: the dictionary fairseq loads beside the labels."""
    return Path(label_dir) / f"dict.{label}.txt"


def iter_label_lines(path: str | Path) -> Iterator[list[str]]:
    """A label file's lines of whitespace-separated tokens (unparsed), one at a time."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield line.split()


def read_label_lines(path: str | Path) -> list[list[str]]:
    """A label file as its lines of whitespace-separated tokens (unparsed)."""
    return list(iter_label_lines(path))


def write_km(path: str | Path, labels: Iterable[np.ndarray]) -> None:
    """fairseq label file: one line per manifest line, space-separated ints."""
    write_whole(path, "".join(" ".join(map(str, x.tolist())) + "\n" for x in labels))


def write_dict(path: str | Path, counts: Iterable[int], symbols: Iterable[str] | None = None) -> None:
    """``dict.*.txt``: a ``symbol count`` line per symbol (default symbols: 0..len(counts)-1,
    every unit of a k-means dictionary, including units no frame uses)."""
    counts = [int(c) for c in counts]
    names = [str(i) for i in range(len(counts))] if symbols is None else list(symbols)
    if len(names) != len(counts):
        raise ValueError(f"{len(names)} symbols for {len(counts)} counts")
    write_whole(path, "".join(f"{s} {c}\n" for s, c in zip(names, counts)))


def check_vocabulary(symbols: list[str], dictionary: str | Path, checkpoint: str | Path, fix: str) -> None:
    """A fine-tuned checkpoint's output symbols (fairseq's specials left out) must be those of
    ``dictionary``, in order; otherwise a ValueError naming both files, what differs and ``fix``."""
    expected = read_dict(dictionary)
    if symbols != expected:
        diff = sorted(set(symbols) ^ set(expected))[:10]
        raise ValueError(f"{checkpoint} outputs another vocabulary than {dictionary} ({len(symbols)} vs "
                         f"{len(expected)} symbols; differing: {diff or 'the order'}): it was fine-tuned on another "
                         f"letters stage's targets; {fix}")


def read_dict(path: str | Path) -> list[str]:
    """Symbols of a fairseq ``dict.*.txt`` in file order; malformed or duplicate lines are errors."""
    path = Path(path)
    symbols: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            raise DictionaryError(f"{path}:{lineno}: expected 'symbol count', got {line!r}; "
                                  "re-run the kmeans stage to rewrite the dictionary")
        if parts[0] in seen:
            raise DictionaryError(f"{path}:{lineno}: symbol {parts[0]!r} already on line {seen[parts[0]]} "
                                  "(the dictionary was appended to, as fairseq's README `>>` does); "
                                  "re-run the kmeans stage, which writes it whole")
        seen[parts[0]] = lineno
        symbols.append(parts[0])
    return symbols


# ---------------------------------------------------------------- features (.npy + .len)
_SHARD = re.compile(r"^(?P<split>.+)_(?P<rank>\d+)_(?P<nshard>\d+)\.npy$")


def shard_range(total: int, nshard: int, rank: int) -> tuple[int, int]:
    """fairseq's rule: shard ``rank`` covers lines [round(N/nshard*rank), round(N/nshard*(rank+1)))."""
    if not 0 <= rank < nshard:
        raise ValueError(f"rank {rank} is outside 0..{nshard - 1}")
    start, end = round(total / nshard * rank), round(total / nshard * (rank + 1))
    if start >= end:
        raise ValueError(f"shard {rank} of {nshard} is empty ({total} lines); lower features.nshard to at most {total}")
    return start, end


def shard_paths(feat_dir: str | Path, split: str, rank: int, nshard: int) -> tuple[Path, Path]:
    stem = Path(feat_dir) / f"{split}_{rank}_{nshard}"
    return stem.with_suffix(".npy"), stem.with_suffix(".len")


def dumped_splits(feat_dir: str | Path) -> list[str]:
    """Splits with ``{split}_{rank}_{nshard}.npy`` features in feat_dir, sorted."""
    return sorted({m["split"] for p in Path(feat_dir).glob("*_*_*.npy") if (m := _SHARD.match(p.name))})


def split_nshard(feat_dir: str | Path, split: str) -> int:
    """The nshard of ``split``'s dumped shards; all ranks must be present, one nshard only."""
    feat_dir = Path(feat_dir)
    found: dict[int, set[int]] = {}
    for p in feat_dir.glob(f"{split}_*_*.npy"):
        m = _SHARD.match(p.name)
        if m and m["split"] == split:
            found.setdefault(int(m["nshard"]), set()).add(int(m["rank"]))
    if not found:
        raise FileNotFoundError(f"{feat_dir}: no {split}_<rank>_<nshard>.npy features; run the features stage "
                                f"with {split} in features.splits")
    if len(found) > 1:
        raise ValueError(f"{feat_dir}: {split} shards from several nshard values {sorted(found)} (stale files); "
                         "delete the folder and re-run the features stage")
    nshard, ranks = next(iter(found.items()))
    missing = sorted(set(range(nshard)) - ranks)
    if missing:
        raise FileNotFoundError(f"{feat_dir}: {split} shard(s) {missing} of {nshard} missing; "
                                "re-run the features stage")
    return nshard


def read_lengths(path: str | Path) -> list[int]:
    return [int(x) for x in Path(path).read_text(encoding="utf-8").split()]


def write_lengths(path: str | Path, lengths: Iterable[int]) -> None:
    write_whole(path, "".join(f"{n}\n" for n in lengths))


def iter_shards(feat_dir: str | Path, split: str) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Yield (memory-mapped (frames, dim) float32, frames per utterance) per shard in rank order."""
    nshard = split_nshard(feat_dir, split)
    for rank in range(nshard):
        npy, lens = shard_paths(feat_dir, split, rank, nshard)
        if not lens.is_file():
            raise FileNotFoundError(f"{lens} missing beside {npy.name}; re-run the features stage")
        feats = np.load(npy, mmap_mode="r")
        lengths = read_lengths(lens)
        if feats.ndim != 2 or feats.shape[0] != sum(lengths):
            raise ValueError(f"{npy}: {feats.shape} features but {lens.name} sums to {sum(lengths)} frames; "
                             "the shard is truncated or stale: re-run the features stage")
        yield feats, lengths


def split_lengths(feat_dir: str | Path, split: str) -> list[int]:
    """Frames per manifest line of ``split``, shards concatenated in rank order."""
    nshard = split_nshard(feat_dir, split)
    return [n for rank in range(nshard) for n in read_lengths(shard_paths(feat_dir, split, rank, nshard)[1])]


# ---------------------------------------------------------------- writing
def write_whole(path: str | Path, text: str) -> None:
    """Write via a temporary file and a rename: a re-run replaces the file, never appends to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
