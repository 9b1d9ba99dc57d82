"""Shared test helpers: where the real human speech lives (../shared/testdata beside the
repository root) and the numbers-only check of metrics files."""

from pathlib import Path

LIBRI_DIR = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "librispeech"
LIBRI_CLIP = LIBRI_DIR / "6313-76958-0021.flac"


def non_numeric_leaves(tree, path: str = "") -> list[str]:
    """Paths of leaves that are not plain numbers: DVC metrics files must hold numbers only."""
    if isinstance(tree, dict):
        return [bad for k, v in tree.items() for bad in non_numeric_leaves(v, f"{path}.{k}")]
    if isinstance(tree, bool) or not isinstance(tree, (int, float)):
        return [f"{path}={tree!r}"]
    return []
