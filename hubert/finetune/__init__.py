"""Stages letters and finetune@<variant>: the character vocabulary, and language-adaptive CTC fine-tuning on fairseq."""
