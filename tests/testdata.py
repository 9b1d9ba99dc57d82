"""Where the real human speech for tests lives: ../shared/testdata beside the repository root."""

from pathlib import Path

LIBRI_DIR = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "librispeech"
LIBRI_CLIP = LIBRI_DIR / "6313-76958-0021.flac"
