"""Loading fine-tuned (hubert_ctc) checkpoints safely and on their own.

Apart from :mod:`hubert.fairseq.checkpoint` because it needs fairseq's fine-tuning
fixes (:mod:`hubert.fairseq.fixes`), which the feature and layer stages do not need.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hubert.fairseq.checkpoint import build_model, read_checkpoint


def load_finetuned(path: str | Path, device: str | torch.device = "cpu"):
    """Load a fine-tuned hubert_ctc checkpoint as the finetune stage exports it
    (:func:`hubert.finetune.run.export_portable`): it carries its pretrained config
    and label dictionaries, so it loads with no other file on this machine.

    Returns (fairseq HubertCtc in eval mode on ``device``, its task: ``target_dictionary``
    maps output indices to symbols, ``cfg.normalize`` says whether the waveform is
    layer-normalised first).
    """
    from hubert.fairseq import fixes

    fixes.apply()
    path = Path(path)
    state, cfg = read_checkpoint(path, "hubert_ctc", "decoding needs a fine-tuned checkpoint (model._name "
                                 "'hubert_ctc'), e.g. the finetune stage's data/finetune/<variant>/checkpoint.pt")
    task_state = state.get("task_state") or {}
    if cfg.model.get("w2v_args") is None or not task_state.get("dictionaries"):
        raise ValueError(f"{path}: this fine-tuned checkpoint would re-read its pretrained checkpoint "
                         f"({cfg.model.get('w2v_path')}) on every load (fairseq stores w2v_args: null); use the one "
                         "the finetune stage exports (data/finetune/<variant>/checkpoint.pt), which loads on its own")
    return build_model(state, cfg, task_state, device)
