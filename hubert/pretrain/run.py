"""One HuBERT pretraining run on fairseq (stages pretrain_iter1 / pretrain_iter2),
top to bottom:

1. :func:`hubert.pretrain.config.read_label_set` checks the labels against the
   manifests and the dictionary and reads what the config must not repeat: the
   label rate (``label_rate.json``, written by the kmeans stage), K (lines of
   ``dict.km.txt``), and from the training labels the units they use and the
   label-prior entropy H(z).
2. :func:`hubert.pretrain.config.fairseq_config` turns the params and the label
   set into one complete fairseq-hydra-train config, written to
   ``out/fairseq_config.yaml``.
3. :func:`hubert.fairseq.launcher.launch` continues the run from its last
   checkpoint unless what it was trained on changed
   (:func:`hubert.pretrain.config.run_identity`), starts fairseq (once, through
   srun on every node of a multi-node run, or once per rank for CPU processes:
   :func:`hubert.pretrain.config.process_overrides`), streams its
   log to ``train_log.jsonl`` and DVCLive, and stops the run at the first
   record whose masked loss is not at the chance level of the labels
   (:func:`hubert.pretrain.metrics.record_check`).
4. The final model is exported without optimizer state (``out/checkpoint.pt``)
   and :func:`hubert.pretrain.metrics.final_metrics` summarises the run.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from hubert.fairseq.checkpoint import export_checkpoint
from hubert.fairseq.formats import dict_file, write_whole
from hubert.fairseq.launcher import LAST, Run, config_yaml, launch, plugin_dir, portable_path
from hubert.pretrain.config import (
    CONFIG_NAME,
    config_header,
    describe_batch,
    effective_batch,
    fairseq_config,
    input_files,
    launch_prefix,
    process_overrides,
    read_label_set,
    run_identity,
)
from hubert.pretrain.metrics import audio_per_update_s, final_metrics, plot_values, record_check
from hubert.pretrain.params import CONV_HOP, CPU_AUTOCAST_ENV, PretrainParams, check_devices


def pretrain(p: PretrainParams, *, manifests: str | Path, labels: str | Path, out: str | Path,
             live_dir: str | Path, sample_rate: int, root: str | Path, name: str = "pretrain") -> dict:
    """Train (or resume) one iteration; returns its metrics (numbers only).

    Run it from ``root``, the repository root: that is fairseq's working
    directory, and every path it writes into configs and checkpoints is made
    relative to it. Writes ``out/fairseq_config.yaml``, ``out/checkpoints/``
    (fairseq's checkpoints, train_log.jsonl, run.json) and ``out/checkpoint.pt``.
    """
    p = dataclasses.replace(p, hardware=check_devices(p.hardware))
    prefix = launch_prefix(p.hardware, dict(os.environ))  # before anything is written: nodes > 1 needs SLURM
    root = Path(root)
    rel_manifests, rel_labels, rel_out = (portable_path(x, root) for x in (manifests, labels, out))
    label_set = read_label_set(manifests, labels, sample_rate)
    print(f"{name}: {label_set.units} units at {label_set.label_rate:g} Hz from {rel_labels}; "
          f"chance log2(K+4) = {label_set.chance_bits:.3f} bits, label prior H(z) = "
          f"{label_set.prior_entropy_bits:.3f} bits")
    batch = effective_batch(p.hardware, p.batch, sample_rate)
    print(f"{name}: {describe_batch(batch)}")

    save_dir = f"{rel_out}/checkpoints"
    config = fairseq_config(p, manifests=rel_manifests, labels=rel_labels, label_rate=label_set.label_rate,
                            save_dir=save_dir, sample_rate=sample_rate, user_dir=plugin_dir(root),
                            valid_subsets=label_set.valid_subsets)
    text = config_yaml(config, config_header(rel_out, p.hardware))
    write_whole(Path(out) / f"{CONFIG_NAME}.yaml", text)

    frame_s = CONV_HOP / sample_rate
    result = launch(Run(
        root=root, config_dir=rel_out, config_name=CONFIG_NAME, save_dir=save_dir,
        config=config, identity=run_identity(config, input_files(manifests, labels)),
        max_update=p.optimization.max_update,
        live_dir=live_dir,
        plot_values=lambda record, previous: plot_values(record, previous, label_set.chance_bits),
        audio_per_update_s=lambda stats: audio_per_update_s(stats, frame_s),
        on_record=record_check(label_set, dict_file(rel_labels).as_posix()), name=name,
        processes=process_overrides(p.hardware), prefix=prefix,
        # always set: an autocast asked for in the user's own environment would not show in the config
        env=((CPU_AUTOCAST_ENV, "bf16" if p.hardware.cpu_autocast else ""),)))
    if result.process_s:
        print(f"{name}: fairseq-hydra-train ran {result.process_s:.0f} s (from update {result.resumed_from})")
    export_checkpoint(Path(out) / "checkpoints" / LAST, Path(out) / "checkpoint.pt")
    return final_metrics(result.records, label_set, batch, frame_s)
