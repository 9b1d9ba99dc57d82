"""The fairseq plugin makes every random draw of training a function of the seed, the
update (or epoch) and the item: two processes that consumed numpy's and torch's global
generators differently before training crop, mask and drop layers alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests._pretrain_fixtures import write_labels


@pytest.fixture(scope="module")
def plugin():
    from fairseq import trainer as fairseq_trainer
    from fairseq.data.audio import hubert_dataset

    import hubert.fairseq.hubert_dvc_plugin as plugin

    assert fairseq_trainer.Trainer._set_seed is plugin.set_seed_with_numpy
    assert hubert_dataset.HubertDataset.collater is plugin.collater_seeding_crops
    return plugin


def dataset(manifests, labels):
    from fairseq.data.audio.hubert_dataset import HubertDataset

    return HubertDataset(str(manifests / "train.tsv"), sample_rate=16000, label_paths=[str(labels / "train.km")],
                         label_rates=100.0, pad_list=[-1], eos_list=[-1],
                         label_processors=[lambda line: torch.tensor([int(x) for x in line.split()])],
                         max_sample_size=16000, random_crop=True)


def consume_global_generators(n: int) -> None:
    """What another process may have done before training: draw from the process-wide streams."""
    np.random.seed(n)
    np.random.random(n)
    torch.manual_seed(n)
    torch.rand(n)


def crops(ds, epoch: int, items: list[int], before: int) -> torch.Tensor:
    consume_global_generators(before)
    ds.set_epoch(epoch)
    return ds.collater([ds[i] for i in items])["net_input"]["source"]


def test_crops_follow_seed_epoch_and_items_not_the_global_stream(plugin, tiny_manifests, tmp_path):
    write_labels(tiny_manifests, tmp_path / "labels", units=20)
    a, b = dataset(tiny_manifests, tmp_path / "labels"), dataset(tiny_manifests, tmp_path / "labels")
    for ds in (a, b):
        ds._hubert_dvc_crop_seed = 1337  # what the plugin's get_batch_iterator stores
    items = [0, 1, 2]
    assert max(len(a[i]["source"]) for i in items) > 16000  # they are cropped
    first = crops(a, 2, items, before=1)
    assert torch.equal(first, crops(b, 2, items, before=12345))
    assert not torch.equal(first, crops(b, 3, items, before=1))  # a new epoch, new crops
    b._hubert_dvc_crop_seed = 7
    assert not torch.equal(first, crops(b, 2, items, before=1))  # another seed, other crops


def test_numpys_global_stream_restarts_with_each_update(plugin):
    """layerdrop and the rounding of each mask's span count draw from numpy's global generator:
    re-seeded with torch's before every update (common.seed + num_updates)."""
    class Trainer:
        cfg = OmegaConf.create({"common": {"seed": 3}})

        def __init__(self, updates: int) -> None:
            self.updates = updates

        def get_num_updates(self) -> int:
            return self.updates

    draws = []
    for before in (1, 999):
        consume_global_generators(before)
        plugin.set_seed_with_numpy(Trainer(7))
        draws.append((np.random.random(4), torch.rand(4)))
    assert np.array_equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    plugin.set_seed_with_numpy(Trainer(8))
    assert not np.array_equal(np.random.random(4), draws[0][0])


def test_batches_are_epoch_1s_whichever_epoch_the_iterator_is_made_in(plugin, tiny_manifests, tmp_path):
    """fairseq builds an iterator's batches once, from the epoch it is created in: a run resumed in
    epoch 3 would train on other batches than the uninterrupted run, which made its iterator in epoch 1."""
    from fairseq.tasks import FairseqTask

    write_labels(tiny_manifests, tmp_path / "labels", units=20)
    ds = dataset(tiny_manifests, tmp_path / "labels")

    def batches(epoch: int) -> list[list[int]]:
        task = FairseqTask(OmegaConf.create({}))
        itr = task.get_batch_iterator(ds, max_tokens=48000, seed=1337, epoch=epoch)
        return [list(map(int, b)) for b in itr.frozen_batches]

    assert batches(3) == batches(1)
    assert sorted(i for b in batches(1) for i in b) == list(range(len(ds)))
