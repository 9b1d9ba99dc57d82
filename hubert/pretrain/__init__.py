"""Stages pretrain_iter1 / pretrain_iter2: HuBERT pretraining params, its fairseq
config, and a loss that explains itself."""
