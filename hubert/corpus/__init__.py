"""Stage corpus: audio validation, manifest records, the built-in espeak-ng corpus, importers."""
