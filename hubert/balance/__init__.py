"""Stage balance: speaker-disjoint splits, the fine-tuning subset, language balancing."""
