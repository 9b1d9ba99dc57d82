"""fairseq user_dir plugin: what fairseq-fixed 0.12.3.1 on torch 2.14 needs for HuBERT pretraining.

fairseq's command-line tools import ``common.user_dir`` (this directory) as a
top-level module before they build the task or load any checkpoint, so this is
the one place that runs inside fairseq's own processes (every distributed
worker included). The generated configs set ``common.user_dir:
hubert/fairseq/hubert_dvc_plugin`` (relative to the repository root, which is
the training process's working directory).

Three fixes for HuBERT pretraining, and those of :mod:`hubert.fairseq.fixes` for
fine-tuning (Mandarin labels read by byte offsets, hubert_ctc's missing
``autoregressive`` field):

1. torch >= 2.6 loads checkpoints with ``weights_only=True``, and fairseq's
   resume from ``checkpoint_last.pt`` then fails on the one fairseq class a
   HuBERT checkpoint holds, ``fairseq.data.dictionary.Dictionary``
   (``task_state``). We add that class to torch's allow-list for the training
   process; the weights-only unpickler stays on, so a checkpoint carrying any
   other global (a reduce to os.system, ...) is still refused. The allow-list
   is hubert.fairseq.checkpoint's, so the library's loads and fairseq's accept exactly
   the same classes.
2. fairseq-fixed's compute_mask_indices draws each row's mask from
   ``np.random.default_rng(None)`` (operating-system entropy) unless it is given
   seed, epoch and indices, which HubertModel.apply_mask never passes: masks,
   and so losses and checkpoints, differed from run to run whatever
   common.seed said. HuBERT's masking now takes its seed from torch's
   generator, which fairseq's trainer re-seeds with common.seed + num_updates
   before every update, so runs are reproducible and a resumed run masks its
   updates as an uninterrupted one would.
3. fairseq's ``all_gather_list`` (``fairseq/distributed/utils.py``, line 620 in
   fairseq-fixed 0.12.3.1), which gathers every rank's logging outputs after each
   update when the criterion's cannot be summed (HuBERT's cannot), allocates its
   buffer with ``torch.cuda.ByteTensor``: distributed training on CPUs (gloo)
   dies at the first update with "Found no NVIDIA driver". Without CUDA its
   buffers are now made on the CPU; the gather itself (an all-reduce of the
   pickled outputs) is fairseq's, unchanged.

And, when the training stage asks for it through the environment, bf16 autocast
of HubertModel on the CPU (:mod:`hubert.fairseq.cpu_autocast`).
"""

from __future__ import annotations

import os
import sys

import torch
from fairseq.data.data_utils import compute_mask_indices
from fairseq.distributed import utils as distributed_utils
from fairseq.models.hubert import hubert as fairseq_hubert

from hubert.fairseq import cpu_autocast, fixes
from hubert.fairseq.checkpoint import allowed_globals

torch.serialization.add_safe_globals(allowed_globals())
fixes.apply()


def seeded_compute_mask_indices(shape, padding_mask, *args, **kwargs):
    """fairseq's compute_mask_indices, seeded from torch's generator when the caller gives no seed."""
    if kwargs.get("seed") is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            seed += torch.distributed.get_rank()  # every rank gets the same torch seed: decorrelate their masks
        batch = shape[0]
        kwargs.update(seed=seed, epoch=0, indices=torch.arange(batch))
    return compute_mask_indices(shape, padding_mask, *args, **kwargs)


fairseq_hubert.compute_mask_indices = seeded_compute_mask_indices

_all_gather_list = distributed_utils.all_gather_list


def all_gather_list_on_cpu(data, group=None, max_size=16384):
    """fairseq's all_gather_list, with its buffers on the CPU when there is no CUDA.

    fairseq's function keeps them as attributes of ``all_gather_list``, looked up
    in its module: once this function has replaced it there, that is this one.
    """
    if not torch.cuda.is_available():
        world_size = distributed_utils.get_world_size(group or distributed_utils.get_global_group())
        this = distributed_utils.all_gather_list
        if getattr(this, "_buffer", None) is None or this._buffer.numel() < max_size * world_size:
            this._buffer = torch.zeros(max_size * world_size, dtype=torch.uint8)
            this._cpu_buffer = torch.zeros(max_size, dtype=torch.uint8)
    return _all_gather_list(data, group=group, max_size=max_size)


if not getattr(distributed_utils.all_gather_list, "_hubert_dvc_cpu", False):
    all_gather_list_on_cpu._hubert_dvc_cpu = True
    distributed_utils.all_gather_list = all_gather_list_on_cpu

# pretrain.hardware.precision bf16 on the CPU (see cpu_autocast)
cpu_autocast.enable_if_asked(fairseq_hubert.HubertModel)

# fairseq imports a user_dir by putting its parent (our hubert/fairseq/ package
# directory) first on sys.path. Left there, its modules (checkpoint, formats,
# launcher) would shadow any top-level module of the same name that fairseq or
# its dependencies import later in this process.
_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _PARENT]
