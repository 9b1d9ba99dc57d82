"""Helpers for the label tests (features, checkpoint, k-means, stages).

``make_tiny_checkpoint`` writes a small, randomly initialised fairseq HuBERT
checkpoint laid out like fairseq's trainer writes one ({'args': None, 'cfg':
resolved container, 'model': state_dict, 'task_state': {'dictionaries': ...},
'optimizer_history', 'extra_state'}), so loading it exercises the same
unpickling as a real checkpoint_best.pt. The CNN keeps HuBERT's strides
(5 * 2**6 = 320 samples, 50 Hz) with few channels.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_CONV = "[(32,10,5)] + [(32,3,2)]*4 + [(32,2,2)]*2"


def make_tiny_checkpoint(path: str | Path, *, layers: int = 2, dim: int = 32, n_clusters: int = 20,
                         extractor_mode: str = "default", normalize: bool = False, seed: int = 0,
                         task_state: bool = True) -> Path:
    from fairseq.data.dictionary import Dictionary
    from fairseq.models.hubert.hubert import HubertConfig, HubertModel
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig
    from omegaconf import OmegaConf

    task_cfg = HubertPretrainingConfig(data="/nonexistent/manifests", label_dir="/nonexistent/labels",
                                       labels=["km"], label_rate=100.0, normalize=normalize)
    model_cfg = HubertConfig(extractor_mode=extractor_mode, encoder_layers=layers, encoder_embed_dim=dim,
                             encoder_ffn_embed_dim=2 * dim, encoder_attention_heads=2, final_dim=16,
                             conv_feature_layers=TINY_CONV, conv_pos=16, conv_pos_groups=4)
    cfg = OmegaConf.create({"task": OmegaConf.structured(task_cfg), "model": OmegaConf.structured(model_cfg)})
    cfg.task._name = "hubert_pretraining"
    cfg.model._name = "hubert"
    dictionary = Dictionary()
    for i in range(n_clusters):
        dictionary.add_symbol(str(i))
    torch.manual_seed(seed)
    model = HubertModel(cfg.model, cfg.task, [dictionary])
    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {"dictionaries": [dictionary]} if task_state else {},
        "extra_state": {"metrics": {}, "previous_training_time": 0.0},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
