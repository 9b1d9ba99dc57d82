"""Stage evaluate: greedy CTC decoding of the fine-tuned models, error rates with bootstrap intervals."""
