"""Pretraining across processes through fairseq's own distributed training.

- params: pretrain.hardware's nodes, cpu_processes, backend and port, refused
  when fairseq could not run them;
- the generated distributed_training block and what fairseq infers from it
  under SLURM (one srun task per node) and torchrun, read by fairseq's own
  ``infer_init_method`` (GPU counts faked: this machine has none), and where
  fairseq's torchrun path stops on a CPU-only machine;
- fairseq's ``all_gather_list`` on the CPU without and with the plugin's fix;
- the launcher stopping every rank when one fails;
- end to end (slow): two gloo processes train the tiny profile through the
  stage and their curves match one process with update_freq 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hubert.fairseq.launcher import _watch, read_log
from hubert.pretrain.config import launch_prefix, process_overrides
from hubert.pretrain.params import HardwareParams, distributed_training, iteration_params
from tests._pretrain_fixtures import compose_params, make_clone, run_stage

REPO = Path(__file__).resolve().parent.parent
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_JOB_ID", "SLURM_JOB_NODELIST",
              "SLURM_STEP_NODELIST", "SLURM_NNODES", "SLURM_NTASKS_PER_NODE", "SLURM_NTASKS", "SLURM_NODEID",
              "SLURM_PROCID", "SLURM_LOCALID", "SLURM_ARRAY_TASK_ID")


def hardware(**kw) -> HardwareParams:
    return HardwareParams(**{"gpus": 0, "precision": "fp32", "num_workers": 0, **kw})


# ---------------------------------------------------------------- params
@pytest.mark.parametrize("kw, message", [
    ({"nodes": 0}, "nodes=0 must be >= 1"),
    ({"cpu_processes": 0}, "cpu_processes=0 must be >= 1"),
    ({"gpus": 4, "cpu_processes": 2}, "one process per GPU"),
    ({"cpu_processes": 2, "backend": "nccl"}, "set pretrain.hardware.backend=gloo"),
    ({"backend": "mpi"}, "nccl, gloo"),
    ({"nodes": 2, "cpu_processes": 2, "backend": "gloo"}, "nodes=2 needs GPUs"),
    ({"port": 0}, "TCP port"),
    ({"port": 70000}, "TCP port"),
])
def test_hardware_refuses_what_fairseq_cannot_run(kw, message):
    with pytest.raises(ValueError, match=message):
        hardware(**kw)


def test_world_size_counts_every_process():
    assert (hardware().world_size, hardware(cpu_processes=3, backend="gloo").world_size) == (1, 3)
    h = hardware(gpus=8, nodes=4, precision="bf16")
    assert (h.processes_per_node, h.world_size, h.workers) == (8, 32, 32)


def test_profiles_compose_the_new_keys_per_iteration():
    section = yaml.safe_load(compose_params(["profile=tiny", "pretrain.iter2.hardware.cpu_processes=2",
                                             "pretrain.iter2.hardware.port=29999"]))["pretrain"]
    one, two = (iteration_params(section, it).hardware for it in ("iter1", "iter2"))
    assert (one.cpu_processes, one.port, one.backend, one.nodes) == (1, 29500, "gloo", 1)
    assert (two.cpu_processes, two.port, two.world_size) == (2, 29999, 2)


# ---------------------------------------------------------------- the config and the launch
def test_one_process_keeps_fairseqs_defaults():
    assert distributed_training(hardware()) == {"distributed_world_size": 1, "nprocs_per_node": 1,
                                                "ddp_backend": "no_c10d", "find_unused_parameters": True}
    assert distributed_training(hardware(gpus=1)) == distributed_training(hardware())
    assert process_overrides(hardware()) == ((),) and launch_prefix(hardware(), {}) == ()


def test_cpu_processes_are_started_one_per_rank():
    h = hardware(cpu_processes=2, backend="gloo", port=29611)
    block = distributed_training(h)
    assert block["distributed_init_method"] == "tcp://127.0.0.1:29611" and block["distributed_no_spawn"] is True
    assert (block["distributed_world_size"], block["distributed_backend"]) == (2, "gloo")
    assert process_overrides(h) == (("distributed_training.distributed_rank=0",),
                                    ("distributed_training.distributed_rank=1",))


def test_nodes_need_a_slurm_allocation():
    h = hardware(gpus=8, nodes=2, precision="fp16")
    with pytest.raises(ValueError, match="sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8"):
        launch_prefix(h, {})
    assert launch_prefix(h, {"SLURM_JOB_ID": "42"}) == ("srun", "--nodes=2", "--ntasks-per-node=1")
    assert launch_prefix(hardware(gpus=8, precision="fp16"), {"SLURM_JOB_ID": "42"}) == ()


def fairseq_cfg(block: dict):
    """fairseq's distributed_training config (within a whole FairseqConfig: it refers to common.tpu)."""
    from fairseq.dataclass.configs import FairseqConfig
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.structured(FairseqConfig), {"distributed_training": block}).distributed_training


@pytest.fixture
def launch_env(monkeypatch, tmp_path):
    """No SLURM or torchrun variables from the machine the tests run on; a fake
    ``scontrol`` that expands any node list to node-a node-b; CUDA devices counted
    as the test says (``set_count``), and torch.cuda.set_device recorded."""
    import torch

    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text("#!/bin/sh\nprintf 'node-a\\nnode-b\\n'\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    devices: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)

    def set_count(n: int) -> list[int]:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        return devices

    return set_count


def test_fairseq_reads_slurm_one_task_per_node(launch_env, monkeypatch):
    """What srun --nodes=2 --ntasks-per-node=1 gives the fairseq process of the second node."""
    from fairseq.distributed.utils import infer_init_method

    launch_env(8)
    for name, value in {"SLURM_JOB_ID": "42", "SLURM_STEP_NODELIST": "node-[a-b]", "SLURM_NNODES": "2",
                        "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODEID": "1"}.items():
        monkeypatch.setenv(name, value)
    cfg = fairseq_cfg(distributed_training(hardware(gpus=8, nodes=2, precision="fp16", port=29511)))
    infer_init_method(cfg)
    assert cfg.distributed_init_method == "tcp://node-a:29511"
    assert (cfg.distributed_world_size, cfg.distributed_rank, cfg.distributed_no_spawn) == (16, 8, False)
    assert cfg.distributed_num_procs == 8  # fairseq spawns one process per GPU of the node


def test_fairseq_reads_torchrun(launch_env, monkeypatch):
    from fairseq.distributed.utils import infer_init_method

    devices = launch_env(8)
    for name, value in {"MASTER_ADDR": "node-a", "MASTER_PORT": "29400", "WORLD_SIZE": "16", "RANK": "11"}.items():
        monkeypatch.setenv(name, value)
    cfg = fairseq_cfg(distributed_training(hardware(gpus=8, nodes=2, precision="fp16")))
    infer_init_method(cfg)
    assert (cfg.distributed_init_method, cfg.distributed_world_size, cfg.distributed_rank) == ("env://", 16, 11)
    assert (cfg.device_id, cfg.distributed_no_spawn, devices) == (3, True, [3])


def test_fairseqs_torchrun_path_stops_on_a_cpu_only_machine(launch_env, monkeypatch):
    """fairseq/distributed/utils.py, _infer_torch_distributed_launch_init: device_id =
    rank % torch.cuda.device_count(). Hence the stage starts CPU ranks itself."""
    from fairseq.distributed.utils import infer_init_method

    launch_env(0)
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29400", "WORLD_SIZE": "2", "RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    # the block as it would be without the stage's own init method
    block = distributed_training(hardware(cpu_processes=2, backend="gloo"))
    del block["distributed_init_method"], block["distributed_no_spawn"]
    with pytest.raises(ZeroDivisionError):
        infer_init_method(fairseq_cfg(block))
    # the stage's config names its rendezvous: fairseq leaves it alone
    cfg = fairseq_cfg(distributed_training(hardware(cpu_processes=2, backend="gloo")))
    infer_init_method(cfg)
    assert (cfg.distributed_init_method, cfg.distributed_rank) == ("tcp://127.0.0.1:29500", 0)


ALL_GATHER = """
import sys
import torch.distributed as dist
from fairseq.distributed import utils
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
try:
    utils.all_gather_list({"loss": 1.5})
    print("fairseq: gathered")
except RuntimeError as exc:
    print("fairseq:", str(exc).splitlines()[0])
import hubert.fairseq.hubert_dvc_plugin  # noqa: E402,F401
print("plugin:", utils.all_gather_list({"loss": 1.5}), utils.all_gather_list._buffer.device)
"""


def test_fairseqs_all_gather_list_needs_the_plugin_on_the_cpu(tmp_path):
    """fairseq/distributed/utils.py, all_gather_list: torch.cuda.ByteTensor; the trainer
    calls it after every update to gather HuBERT's logging outputs."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("fairseq's all_gather_list works where CUDA is")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", ALL_GATHER, str(tmp_path / "rendezvous")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("fairseq: Found no NVIDIA driver"), out.stdout
    assert lines[1] == "plugin: [{'loss': 1.5}] cpu", out.stdout


def test_a_failing_rank_stops_the_others():
    """A rank that dies would leave the others waiting in their next collective."""
    rank0 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    rank1 = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    start = time.monotonic()
    failed = _watch(rank0, [rank1])
    rank0.wait(timeout=60)  # stopped, not left to sleep (its exit status is reaped by the stopping)
    assert time.monotonic() - start < 60 and failed == [3]


# ---------------------------------------------------------------- end to end
def train_inner(clone: Path) -> list:
    return [r for r in read_log(clone / "data" / "pretrain" / "iter1" / "checkpoints") if r.tag == "train_inner"]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_update_freq_2(tmp_path, tiny_corpus, tiny_manifests):
    """The tiny profile (40 updates) on two CPU processes vs one process with update_freq 2.

    Both runs build the same model (same seed) and, update by update, train on the
    same utterances: fairseq gives rank r the batches r, r + 2, ... of the
    epoch's seeded batch list, and update_freq 2 groups batches 2k and 2k + 1, so
    the utterance count of every logged interval must be equal. What differs is
    randomness only: the plugin offsets each rank's mask seed by its rank, and
    dropout and layerdrop follow each rank's copy of the per-update streams, as
    the second forward pass of update_freq 2 follows the first (the crops agree:
    they are seeded by the batch's items).
    The tolerance is measured in the test: the curves must be closer than a third
    of the distance between two update_freq 2 runs whose seed differs (another
    init and data order). Measured here: mean |difference| of the total loss
    0.020 bits (2 ranks vs update_freq 2), 0.478 bits (seed 1337 vs 1338); one
    process with update_freq 1 (half the batch) is 0.062 bits from update_freq 2.
    """
    runs = {}
    for name, overrides in {"ranks": ["pretrain.hardware.cpu_processes=2"],
                            "freq": ["pretrain.batch.update_freq=2"],
                            "freq_seed": ["pretrain.batch.update_freq=2", "pretrain.seed=1338"]}.items():
        clone = make_clone(tmp_path / name, tiny_corpus, tiny_manifests, overrides=overrides)
        code, output = run_stage(clone)
        assert code == 0, output[-3000:]
        runs[name] = (train_inner(clone), output)

    ranks_out = runs["ranks"][1]
    assert "initialized host" in ranks_out and "as rank 1" in ranks_out  # two fairseq processes met
    assert "distributed_world_size: 2" in (tmp_path / "ranks/data/pretrain/iter1/fairseq_config.yaml").read_text()
    ranks, freq, freq_seed = (runs[n][0] for n in ("ranks", "freq", "freq_seed"))
    assert [r.step for r in ranks] == [r.step for r in freq] == list(range(2, 41, 2))
    assert [r.stats["bsz"] for r in ranks] == [r.stats["bsz"] for r in freq]  # the same utterances per update

    def loss(records, key="loss"):
        return np.array([r.stats[key] for r in records])

    distributed = np.abs(loss(ranks) - loss(freq)).mean()
    seeds = np.abs(loss(freq) - loss(freq_seed)).mean()
    print(f"mean |loss difference|: 2 ranks vs update_freq 2 {distributed:.4f} bits, seeds {seeds:.4f} bits")
    assert distributed < seeds / 3, (loss(ranks), loss(freq), loss(freq_seed))
    for records in (ranks, freq):  # both learn: the masked loss ends below where it starts
        assert loss(records, "loss_m_0")[-3:].mean() < loss(records, "loss_m_0")[:3].mean()
