"""fairseq user_dir plugin: what fairseq-fixed 0.12.3.1 on torch 2.14 needs for HuBERT pretraining.

fairseq's command-line tools import ``common.user_dir`` (this directory) as a
top-level module before they build the task or load any checkpoint, so this is
the one place that runs inside fairseq's own processes (every distributed
worker included). The generated configs set ``common.user_dir:
hubert/fairseq/hubert_dvc_plugin`` (relative to the repository root, which is
the training process's working directory).

Five fixes for HuBERT pretraining, and those of :mod:`hubert.fairseq.fixes` for
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
4. Every other random draw of training is made a function of the seed, the
   update (or epoch) and the item, so that a killed run resumed from a
   checkpoint continues exactly as the uninterrupted run would. fairseq seeds
   numpy's global generator once per process and re-seeds only torch's before
   each update, but numpy's global stream decides layerdrop
   (``np.random.random()`` per layer), the probabilistic rounding of every
   mask's span count (``np.random.rand()`` in compute_mask_indices) and, in
   HubertDataset, where each clip is cropped (``np.random.randint``). A resumed
   process draws them from another point of that stream. Now numpy's global
   generator is re-seeded with torch's before each update (common.seed +
   num_updates, the same on every rank, as fairseq's torch seed), and the crops
   of a batch come from a generator of their own, seeded by the iterator's seed
   (common.seed + epoch for training, common.seed for validation), the epoch
   and the batch's item indices.
5. A distributed run (GPUs, or CPU processes on gloo) resumes: rank 0 reads the
   checkpoint (weights-only, the allow-list above) and fairseq broadcasts it to
   the other ranks as a pickle (``broadcast_object``), which they unpickle with
   torch.load's weights-only default. That pickle holds what the file did not:
   the cfg as OmegaConf's DictConfig (fairseq converts it after reading) and
   fairseq's ``_TensorPlaceholder`` (an int: where each tensor goes, the
   tensors travelling apart), so every rank but 0 died at the first resume
   ("Unsupported global: omegaconf.dictconfig.DictConfig"). The cfg now travels
   as the plain container the file holds and the placeholder is allowed for
   that one load; the weights-only check stays on.

And, when the training stage asks for it through the environment, bf16 autocast
of HubertModel on the CPU (:mod:`hubert.fairseq.cpu_autocast`).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from fairseq import trainer as fairseq_trainer
from fairseq.data.audio import hubert_dataset
from fairseq.data.data_utils import compute_mask_indices
from fairseq.distributed import utils as distributed_utils
from fairseq.models.hubert import hubert as fairseq_hubert
from fairseq.tasks import FairseqTask

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

# ---------------------------------------------------------------- 4. seeded draws
_set_seed = fairseq_trainer.Trainer._set_seed


def set_seed_with_numpy(self) -> None:
    """fairseq's per-update torch seed, and the same seed for numpy's global generator."""
    _set_seed(self)
    np.random.seed((self.cfg.common.seed + self.get_num_updates()) % 2**32)


_get_batch_iterator = FairseqTask.get_batch_iterator


def get_batch_iterator_seeding_crops(self, dataset, *args, **kwargs):
    """fairseq's get_batch_iterator, its batches always those of epoch 1; the dataset keeps the
    iterator's seed for its crops.

    fairseq groups the items into batches once per iterator (``make_batches``: the
    size-ordered indices under ``numpy_seed(seed + epoch)``, epoch being the one the
    iterator is created in) and keeps those batches for every later epoch, only
    shuffling their order with the epoch. An uninterrupted run creates its iterator in
    epoch 1; a run resumed in epoch 3 would create it there and train on other batches
    from then on. The epoch the iterator starts in is the checkpoint's all the same
    (fairseq's load_state_dict sets it after creation).
    """
    dataset._hubert_dvc_crop_seed = int(kwargs.get("seed", 1))
    if "epoch" in kwargs:
        kwargs["epoch"] = 1
    return _get_batch_iterator(self, dataset, *args, **kwargs)


def set_epoch(self, epoch: int) -> None:
    self._hubert_dvc_epoch = int(epoch)


_collater = hubert_dataset.HubertDataset.collater


def collater_seeding_crops(self, samples):
    """fairseq's collater, with the batch's crops drawn from (seed, epoch, item indices)."""
    ids = [int(s["id"]) for s in samples if s["source"] is not None]
    entropy = [getattr(self, "_hubert_dvc_crop_seed", 0), getattr(self, "_hubert_dvc_epoch", 0), *ids]
    self._hubert_dvc_crop_rng = np.random.default_rng(entropy)
    return _collater(self, samples)


_crop_to_max_size = hubert_dataset.HubertDataset.crop_to_max_size


def crop_to_max_size_seeded(self, wav, target_size):
    """fairseq's random crop, drawn from the batch's generator instead of numpy's global one."""
    diff = len(wav) - target_size
    rng = getattr(self, "_hubert_dvc_crop_rng", None)
    if diff <= 0 or not self.random_crop or rng is None:
        return _crop_to_max_size(self, wav, target_size)
    start = int(rng.integers(0, diff + 1))
    return wav[start:start + target_size], start


if not getattr(fairseq_trainer.Trainer, "_hubert_dvc_seeded", False):
    fairseq_trainer.Trainer._set_seed = set_seed_with_numpy
    FairseqTask.get_batch_iterator = get_batch_iterator_seeding_crops
    hubert_dataset.HubertDataset.set_epoch = set_epoch
    hubert_dataset.HubertDataset.collater = collater_seeding_crops
    hubert_dataset.HubertDataset.crop_to_max_size = crop_to_max_size_seeded
    fairseq_trainer.Trainer._hubert_dvc_seeded = True

# ---------------------------------------------------------------- 5. resuming a distributed run
_broadcast_object = distributed_utils.broadcast_object


def broadcast_object_weights_only(obj, src_rank, group, dist_device=None):
    """fairseq's broadcast_object, with a checkpoint's cfg sent as a plain container and
    fairseq's tensor placeholders allowed for the receiving ranks' weights-only load."""
    from omegaconf import DictConfig, OmegaConf

    was_config = isinstance(obj, dict) and isinstance(obj.get("cfg"), DictConfig)
    if was_config:
        obj = {**obj, "cfg": OmegaConf.to_container(obj["cfg"])}
    with torch.serialization.safe_globals([distributed_utils._TensorPlaceholder]):
        out = _broadcast_object(obj, src_rank, group, dist_device)
    if isinstance(out, dict) and isinstance(out.get("cfg"), dict) and "optimizer_history" in out:
        out["cfg"] = OmegaConf.create(out["cfg"])  # a checkpoint, as fairseq's loader leaves it on rank 0
    return out


if not getattr(distributed_utils.broadcast_object, "_hubert_dvc_weights_only", False):
    broadcast_object_weights_only._hubert_dvc_weights_only = True
    distributed_utils.broadcast_object = broadcast_object_weights_only

# ---------------------------------------------------------------- 3. all_gather_list on the CPU
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
