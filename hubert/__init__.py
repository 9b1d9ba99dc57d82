"""hubert-dvc: reproducible HuBERT pretraining on mixed Mandarin + English speech."""
