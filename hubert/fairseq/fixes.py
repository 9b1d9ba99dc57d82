"""Fixes to fairseq-fixed 0.12.3.1 that HuBERT fine-tuning needs, applied in place.

Both the training processes (through the user_dir plugin) and our own loaders
(:func:`hubert.fairseq.checkpoint.load_finetuned`) call :func:`apply`; it is
idempotent.

1. ``HubertDataset.get_label`` reads a label line by seeking to its byte offset
   in a file opened in text mode and reading ``end - start`` *characters*. For
   ASCII (the k-means labels) both agree; for a Mandarin ``.ltr`` line each Han
   character is 3 bytes, so the read runs on into the following lines and every
   later offset points into the middle of another line. Labels are read as
   bytes and decoded instead.
2. ``HubertEncoder`` (hubert_ctc) reads ``cfg.autoregressive``, a field that
   HubertCtcConfig lacks: building the model fails with "Key 'autoregressive'
   not in 'HubertCtcConfig'". A CTC model is not autoregressive, so the field is
   supplied as false when it is missing.
"""

from __future__ import annotations

_APPLIED = "_hubert_dvc_fixed"


def _get_label_bytes(self, index: int, label_idx: int):
    if self.store_labels:
        label = self.label_list[label_idx][index]
    else:
        start, end = self.label_offsets_list[label_idx][index]
        with open(self.label_paths[label_idx], "rb") as f:
            f.seek(start)
            label = f.read(end - start).decode("utf-8")
    if self.label_processors is not None:
        label = self.label_processors[label_idx](label)
    return label


def apply() -> None:
    """Patch fairseq's classes (once per process)."""
    from fairseq.data.audio import hubert_dataset
    from fairseq.models.hubert import hubert_asr
    from omegaconf import DictConfig, open_dict

    if getattr(hubert_dataset.HubertDataset, _APPLIED, False):
        return
    hubert_dataset.HubertDataset.get_label = _get_label_bytes

    encoder_init = hubert_asr.HubertEncoder.__init__

    def encoder_init_with_defaults(self, cfg, task):
        if isinstance(cfg, DictConfig) and "autoregressive" not in cfg:
            with open_dict(cfg):
                cfg.autoregressive = False
        elif not isinstance(cfg, DictConfig) and not hasattr(cfg, "autoregressive"):
            cfg.autoregressive = False
        encoder_init(self, cfg, task)

    hubert_asr.HubertEncoder.__init__ = encoder_init_with_defaults
    setattr(hubert_dataset.HubertDataset, _APPLIED, True)
