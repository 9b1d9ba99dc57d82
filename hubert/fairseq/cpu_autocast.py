"""bf16 autocast for HuBERT pretraining on the CPU (``pretrain.hardware.precision: bf16``
with ``gpus: 0``).

fairseq's own ``common.bf16`` casts the whole model and its optimizer to bf16, and
needs a GPU. On a CPU with bf16 matrix units (AVX-512 BF16, AMX) the cheaper way is
mixed precision: weights, gradients and Adam's state stay fp32, and HubertModel's
forward runs under ``torch.autocast("cpu", bfloat16)``, which does the convolutions
and matrix products in bf16. Three things HubertModel needs for that:

- ``apply_mask`` writes the fp32 mask embedding into the (bf16) features in place,
  which index_put refuses for mixed dtypes: the masking is done on an fp32 copy,
  cast back;
- ``compute_nce`` returns its cosine logits in the features' dtype: in bf16 their
  resolution at HuBERT's temperature 0.1 is about 0.06, so they are kept fp32;
- the logits and the feature penalty leave forward as fp32, so the criterion's
  cross-entropy runs in fp32 outside autocast.

The training stage asks for it through the environment (:data:`ENV`) of the
fairseq processes it starts, since fairseq's config has no such key; a process
without it (checkpoint loading, feature extraction) runs fp32 as before.
"""

from __future__ import annotations

import functools
import os
import sys

import torch

from hubert.pretrain.params import CPU_AUTOCAST_ENV as ENV

FLOAT_OUTPUTS = ("logit_m_list", "logit_u_list")


def _as_float(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    if isinstance(value, list):
        return [_as_float(v) for v in value]
    return value


def patch(model_class) -> None:
    """Make ``model_class`` (fairseq's HubertModel) run its forward under CPU bf16 autocast."""
    if getattr(model_class, "_hubert_dvc_autocast", False):
        return
    forward, apply_mask, compute_nce = model_class.forward, model_class.apply_mask, model_class.compute_nce

    @functools.wraps(forward)
    def forward_bf16(self, *args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            result = forward(self, *args, **kwargs)
        if isinstance(result, dict):
            result = {k: _as_float(v) if k in FLOAT_OUTPUTS or k == "features_pen" else v for k, v in result.items()}
        return result

    @functools.wraps(apply_mask)
    def apply_mask_fp32(self, x, padding_mask, target_list):
        if x.dtype == self.mask_emb.dtype:
            return apply_mask(self, x, padding_mask, target_list)
        masked, indices = apply_mask(self, x.to(self.mask_emb.dtype), padding_mask, target_list)
        return masked.to(x.dtype), indices

    @functools.wraps(compute_nce)
    def compute_nce_fp32(self, x, pos, negs):
        return compute_nce(self, x.float(), pos.float(), negs.float())

    model_class.forward = forward_bf16
    model_class.apply_mask = apply_mask_fp32
    model_class.compute_nce = compute_nce_fp32
    model_class._hubert_dvc_autocast = True


def enable_if_asked(model_class) -> bool:
    """Patch ``model_class`` when this process's environment asks for CPU bf16 autocast."""
    asked = os.environ.get(ENV, "")
    if not asked:
        return False
    if asked != "bf16":
        raise ValueError(f"{ENV}={asked!r}: the only CPU autocast is bf16")
    patch(model_class)
    # in the training log: the config says fp32 (fairseq trains fp32 around the autocast)
    print(f"hubert_dvc: {ENV}=bf16: {model_class.__name__} runs under bf16 autocast on the CPU", file=sys.stderr,
          flush=True)
    return True
