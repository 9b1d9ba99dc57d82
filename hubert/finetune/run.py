"""One CTC fine-tuning run on fairseq (stage finetune@<variant>), top to bottom:

1. :func:`resolve_start` reads what the variant starts from: a pretrained HuBERT
   checkpoint (its weights, or only its shape for ``weights: random``), or a
   fine-tuned variant to continue (language adaptation: fairseq's
   ``finetune_from_model``, with the model built from that variant's own
   pretrained checkpoint).
2. :func:`fairseq_config` writes fairseq's HuBERT fine-tuning recipe (task
   hubert_pretraining with fine_tuning, model hubert_ctc, criterion ctc) for the
   variant's languages and label set.
3. :func:`hubert.fairseq.launcher.launch` runs it, resumable like pretraining.
4. :func:`export_portable` writes the best checkpoint (by valid character error)
   as ``out/checkpoint.pt``, loadable on its own (:func:`hubert.fairseq.checkpoint.load_finetuned`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hubert.fairseq.checkpoint import export_checkpoint, safe_load
from hubert.fairseq.formats import check_vocabulary, dict_file, label_file, read_tsv, write_whole
from hubert.fairseq.launcher import (
    NEVER_EPOCHS,
    Record,
    Run,
    TrainingError,
    common_block,
    config_identity,
    config_yaml,
    file_digest,
    hydra_block,
    launch,
    plugin_dir,
    portable_path,
)
from hubert.finetune.params import FinetuneParams, Variant
from hubert.pretrain.params import (
    CONV_HOP,
    CPU_AUTOCAST_ENV,
    HardwareParams,
    check_devices,
    distributed_training,
    require_resolved,
)

CONFIG_NAME = "fairseq_config"
BEST = "checkpoint_best.pt"
ERROR_METRIC = "uer"  # fairseq's ctc criterion: token (character) error rate on the valid subset, in %


class StartError(ValueError):
    """A variant's starting point is missing or is not the kind of checkpoint it names."""


@dataclass(frozen=True)
class Start:
    """What a variant's model is built from: the pretrained checkpoint (w2v_path, its
    config and its label dictionaries, which shape the model's label embeddings) and,
    for adaptation, the fine-tuned checkpoint whose weights it continues."""

    pretrained: str
    pretrained_cfg: dict[str, Any]
    label_dictionaries: Any
    random_weights: bool
    continue_from: str | None = None


def _cfg(state: dict[str, Any]) -> dict[str, Any]:
    cfg = state.get("cfg")
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise StartError("no fairseq cfg in the checkpoint")
    return cfg


def resolve_start(name: str, variant: Variant, checkpoint: str | Path, root: str | Path) -> Start:
    """Read the variant's starting checkpoint (``data/<init>/checkpoint.pt``) and say
    what fairseq builds the model from; errors name the file and the fix."""
    path = Path(checkpoint)
    shown = portable_path(path, root)
    if not path.is_file():
        raise StartError(f"finetune.variants.{name}: its start {shown} does not exist; run the stage that writes it "
                         f"(dvc repro {variant.init.replace('/', '_').replace('finetune_', 'finetune@')}) or "
                         "change init to pretrain/iter1, pretrain/iter2 or finetune/<variant>")
    try:
        state = safe_load(path)
        model_name = _cfg(state)["model"].get("_name")
    except (ValueError, StartError) as exc:
        raise StartError(f"finetune.variants.{name}: {shown} is not a fairseq checkpoint ({exc})") from exc
    if variant.parent is None:
        if model_name != "hubert":
            raise StartError(f"finetune.variants.{name}: {shown} holds a {model_name!r} model, not a pretrained "
                             "HuBERT (model._name 'hubert'); init pretrain/* must be a pretrain stage's checkpoint")
        return Start(shown, _cfg(state), (state.get("task_state") or {}).get("dictionaries"),
                     variant.weights == "random")
    if model_name != "hubert_ctc":
        raise StartError(f"finetune.variants.{name}: {shown} holds a {model_name!r} model, not a fine-tuned "
                         "hubert_ctc one; init finetune/<variant> must name a fine-tuning variant")
    model_cfg = _cfg(state)["model"]
    if not model_cfg.get("w2v_args"):
        raise StartError(f"finetune.variants.{name}: {shown} does not carry its pretrained config (w2v_args); "
                         "re-run its finetune stage, which exports it portable")
    # an exported variant carries its pretrained checkpoint's dictionaries (export_portable)
    return Start(str(model_cfg["w2v_path"]), dict(model_cfg["w2v_args"]), state["task_state"].get("dictionaries"),
                 True, continue_from=shown)


def train_subsets(variant: Variant, letters: str | Path) -> tuple[str, list[str]]:
    """(train subset, valid subsets) of a variant: ``finetune`` / ``valid`` for every
    language (then one valid per language, to see each), ``finetune_<lang>`` /
    ``valid_<lang>`` for one. The first valid subset picks the best checkpoint."""
    letters = Path(letters)
    langs = sorted(variant.languages)
    available = sorted(p.stem[len("finetune_"):] for p in letters.glob("finetune_*.tsv") if len(read_tsv(p)[1]))
    missing = [lang for lang in langs if lang not in available]
    if missing:
        raise ValueError(f"no fine-tuning data for {', '.join(missing)} in {letters} (finetune_<lang>.tsv; have: "
                         f"{', '.join(available) or 'none'}): give the corpus transcribed {', '.join(missing)} "
                         "training speech, or drop the language from the variant's languages")
    if len(langs) == 1:
        return f"finetune_{langs[0]}", [f"valid_{langs[0]}"]
    if set(langs) != set(available):
        raise ValueError(f"languages {langs}: a variant trains on one language or on all of them ({available})")
    per_language = [f"valid_{lang}" for lang in langs if read_tsv(letters / f"valid_{lang}.tsv")[1]]
    return "finetune", ["valid", *per_language]


def fairseq_config(p: FinetuneParams, variant: Variant, start: Start, *, hardware: HardwareParams, letters: str,
                   save_dir: str, sample_rate: int, user_dir: str, train_subset: str,
                   valid_subsets: list[str], shortest_frames: int) -> dict[str, Any]:
    """fairseq's HuBERT fine-tuning config (base_10h.yaml's shape) as a dict; paths as given."""
    m, o, b, s = p.model, p.optimization, p.batch, p.schedule
    require_resolved(hardware)
    width = int(start.pretrained_cfg["model"]["encoder_embed_dim"])
    if m.mask_channel_prob > 0 and m.mask_channel_length >= width:
        raise ValueError(f"finetune.model.mask_channel_length={m.mask_channel_length} must be below the model's "
                         f"encoder_embed_dim={width} (fairseq would mask every channel); lower it")
    # fairseq-fixed's compute_mask_indices raises ("this should never happens") whenever a row's
    # span count rounds down to 0, so prob x length / span must reach 1 (time: on the shortest clip)
    if m.mask_channel_prob > 0 and m.mask_channel_prob * width / m.mask_channel_length < 1:
        raise ValueError(f"finetune.model.mask_channel_prob={m.mask_channel_prob} x encoder_embed_dim={width} / "
                         f"mask_channel_length={m.mask_channel_length} is below 1: fairseq fails when no channel "
                         "span is drawn; raise mask_channel_prob or lower mask_channel_length (or set the prob to 0)")
    if m.apply_mask and m.mask_prob > 0 and m.mask_prob * shortest_frames / m.mask_length < 1:
        raise ValueError(f"finetune.model.mask_prob={m.mask_prob} x {shortest_frames} frames (the shortest "
                         f"{train_subset} utterance) / mask_length={m.mask_length} is below 1: fairseq fails when no "
                         "time span is drawn; raise mask_prob or lower mask_length")
    checkpoint: dict[str, Any] = {
        "save_dir": save_dir,
        "save_interval": NEVER_EPOCHS,
        "save_interval_updates": s.validate_interval_updates,
        "keep_interval_updates": 1,
        "no_epoch_checkpoints": True,
        "best_checkpoint_metric": ERROR_METRIC,
        "maximize_best_checkpoint_metric": False,
    }
    if start.continue_from:
        checkpoint["finetune_from_model"] = start.continue_from
    return {
        **hydra_block(),
        "common": common_block(p.seed, hardware.gpus, hardware.precision, hardware.cpu_autocast, s.log_interval,
                               user_dir),
        "checkpoint": checkpoint,
        # fine-tuning runs on this machine alone: its GPUs, or one CPU process (nodes and
        # cpu_processes spread pretraining only)
        "distributed_training": distributed_training(replace(hardware, nodes=1, cpu_processes=1)),
        "task": {
            "_name": "hubert_pretraining",
            "data": letters,
            "label_dir": letters,
            "labels": ["lidltr" if variant.lid else "ltr"],
            "fine_tuning": True,
            "single_target": True,
            "sample_rate": sample_rate,
            # must be pretraining's (fairseq asserts it): the waveform is normalised or not as the model saw it
            "normalize": bool(start.pretrained_cfg["task"]["normalize"]),
            # whole utterances, padded: a crop would cut audio its transcript still names
            "pad_audio": True,
            "random_crop": False,
        },
        "dataset": {
            "train_subset": train_subset,
            "valid_subset": ",".join(valid_subsets),
            "num_workers": hardware.num_workers,
            "max_tokens": b.max_tokens,
            # fairseq's default 8 silently drops the last utterances of small sets
            "required_batch_size_multiple": 1,
            "skip_invalid_size_inputs_valid_test": True,
            "validate_interval": NEVER_EPOCHS,
            "validate_interval_updates": s.validate_interval_updates,
            "fixed_validation_seed": p.seed,
            **({"data_buffer_size": 0} if hardware.num_workers == 0 else {}),
        },
        "criterion": {"_name": "ctc", "zero_infinity": True},
        "optimization": {"max_update": variant.max_update or o.max_update, "lr": [o.lr], "sentence_avg": True,
                         "update_freq": [b.update_freq], "clip_norm": o.clip_norm},
        "optimizer": {"_name": "adam", "adam_betas": f"({o.adam_betas[0]},{o.adam_betas[1]})",
                      "adam_eps": o.adam_eps},
        "lr_scheduler": {"_name": "tri_stage", "phase_ratio": list(o.phase_ratio), "init_lr_scale": 0.01,
                         "final_lr_scale": o.final_lr_scale},
        "model": {"_name": "hubert_ctc", "w2v_path": start.pretrained,
                  "no_pretrained_weights": start.random_weights,
                  **{k: getattr(m, k) for k in m.__dataclass_fields__}},
    }


# what may change between a checkpoint and its continuation: how long, where, on what
# hardware, how often to log, validate and save; paths (the bytes behind them are in the identity)
CONTINUABLE = ("hydra.", "defaults", "common.log_interval", "common.user_dir", "common.cpu", "checkpoint.",
               "distributed_training.", "dataset.num_workers", "dataset.data_buffer_size",
               "dataset.validate_interval", "optimization.max_update", "task.data", "task.label_dir",
               "model.w2v_path")


def run_identity(config: dict[str, Any], starts: list[Path], inputs: list[Path]) -> dict[str, str]:
    """What a fine-tuning checkpoint must have been trained with to be continued: every
    config key that shapes the training (learning rate, schedule, masking, batch, labels,
    precision, seed, ...), the bytes of its start (the pretrained checkpoint, and the
    fine-tuned one it continues) and of the manifests, labels and dictionary. Only
    max_update, hardware, logging, validation and saving may change: a finished run given
    another learning rate starts over rather than reporting the old model under new params."""
    identity = config_identity(config, CONTINUABLE)
    identity |= {f"start {Path(p).parent.name}/{Path(p).name}": file_digest(p) for p in starts}
    identity |= {f"file {Path(p).name}": file_digest(p) for p in inputs}
    return identity


def export_portable(src: str | Path, dst: str | Path, start: Start) -> int:
    """Write a fine-tuned checkpoint that loads without its pretrained checkpoint.

    fairseq's hubert_ctc stores ``w2v_args: null`` and re-reads the pretrained
    checkpoint from ``w2v_path`` on every load, which breaks once the files move.
    The export carries the pretrained config (``cfg.model.w2v_args``) and the
    pretrained task's label dictionaries (which shape the model's label
    embeddings) in ``task_state``; optimizer state and the trainer's meters go
    (:func:`hubert.fairseq.checkpoint.export_checkpoint`).
    """
    def portable(state: dict[str, Any]) -> None:
        state["cfg"]["model"]["w2v_args"] = start.pretrained_cfg
        state["cfg"]["model"]["w2v_path"] = start.pretrained  # where it came from (relative): not read when loading
        state.setdefault("task_state", {})["dictionaries"] = start.label_dictionaries
        if state["cfg"].get("checkpoint", {}).get("finetune_from_model"):
            state["cfg"]["checkpoint"]["finetune_from_model"] = None

    return export_checkpoint(src, dst, portable)


def check_dictionary(checkpoint: str | Path, dictionary: str | Path) -> None:
    """A fine-tuned checkpoint's output symbols must be the vocabulary file's, in order."""
    state = safe_load(checkpoint)
    target = (state.get("task_state") or {}).get("target_dictionary")
    if target is None:
        raise ValueError(f"{checkpoint}: no target dictionary in task_state: not a fine-tuned checkpoint")
    check_vocabulary(list(target.symbols[target.nspecial:]), dictionary, checkpoint,
                     "re-run its finetune stage (dvc repro) so that model and vocabulary come from the same letters "
                     "stage")


# ---------------------------------------------------------------- records and metrics
def plot_values(record: Record, previous: Record | None) -> dict[str, float]:
    names = ("loss", "uer", "wer", "lr", "gnorm")
    return {n: record.stats[n] for n in names if n in record.stats}


def check_record(record: Record, line: str, first: bool) -> None:
    if "loss" not in record.stats:
        raise TrainingError(f"fairseq logged a {record.tag} record without 'loss': {line}")


def final_metrics(records: list[Record], best_update: int) -> dict[str, Any]:
    train = [r for r in records if r.tag == "train_inner"]
    out: dict[str, Any] = {"updates": train[-1].step if train else 0, "best_update": best_update}
    if train:
        out["loss"] = {"first": round(train[0].stats["loss"], 4), "last": round(train[-1].stats["loss"], 4)}
        steps = train[-1].step - (train[0].step - 1)
        out["train_s"] = round(train[-1].train_s, 1)
        out["s_per_update"] = round(train[-1].train_s / max(1, steps), 4)
    for tag in sorted({r.tag for r in records if r.tag.startswith("valid")}):
        errors = [r.stats[ERROR_METRIC] for r in records if r.tag == tag and ERROR_METRIC in r.stats]
        if errors:
            out[f"{tag}_uer"] = {"best": round(min(errors), 3), "last": round(errors[-1], 3)}
    return out


def finetune(p: FinetuneParams, name: str, variant: Variant, *, hardware: HardwareParams, start_checkpoint: str | Path,
             letters: str | Path, out: str | Path, live_dir: str | Path, sample_rate: int,
             root: str | Path) -> dict[str, Any]:
    """Fine-tune (or resume) one variant; writes out/fairseq_config.yaml, out/checkpoints/
    and out/checkpoint.pt; returns its metrics."""
    if hardware.gpus == 0 and hardware.precision == "auto":
        # fine-tuning on the CPU trains in fp32 whatever pretraining's precision: nothing to decide or announce
        hardware = replace(hardware, precision="fp32")
    hardware = check_devices(hardware)
    root = Path(root)
    start = resolve_start(name, variant, start_checkpoint, root)
    label = "lidltr" if variant.lid else "ltr"
    if start.continue_from:
        check_dictionary(root / start.continue_from, dict_file(letters, label))
    train_subset, valid_subsets = train_subsets(variant, letters)
    letters = Path(letters)
    rel_letters, rel_out = portable_path(letters, root), portable_path(out, root)
    save_dir = f"{rel_out}/checkpoints"
    _, rows = read_tsv(letters / f"{train_subset}.tsv")
    total_s = sum(n for _, n in rows) / sample_rate
    shortest = min(n for _, n in rows)  # masking runs in training only
    config = fairseq_config(p, variant, start, hardware=hardware, letters=rel_letters, save_dir=save_dir,
                            sample_rate=sample_rate, user_dir=plugin_dir(root), train_subset=train_subset,
                            valid_subsets=valid_subsets, shortest_frames=shortest // CONV_HOP)
    header = (f"# Generated by stages/finetune.py from params.yaml (finetune.*, variant {name}). Paths are relative\n"
              "# to the repository root; to re-run by hand from there:\n"
              f"#   fairseq-hydra-train --config-dir {rel_out} --config-name {CONFIG_NAME}\n")
    write_whole(Path(out) / f"{CONFIG_NAME}.yaml", config_yaml(config, header))
    inputs = [letters / f"{s}.tsv" for s in (train_subset, *valid_subsets)]
    inputs += [label_file(letters, s, label) for s in (train_subset, *valid_subsets)] + [dict_file(letters, label)]
    mean_s = total_s / len(rows)
    print(f"finetune {name}: {len(rows)} utterances ({total_s / 60:.1f} min) from "
          f"{train_subset}, labels {label}, start {start.continue_from or start.pretrained}"
          f"{' (shape only: random weights)' if start.random_weights and not start.continue_from else ''}")
    result = launch(Run(
        root=root, config_dir=rel_out, config_name=CONFIG_NAME, save_dir=save_dir, config=config,
        identity=run_identity(config, [root / s for s in (start.pretrained, start.continue_from) if s], inputs),
        max_update=config["optimization"]["max_update"], live_dir=live_dir, plot_values=plot_values,
        # fairseq's ctc criterion logs sentences per batch (bsz), not samples: audio is estimated from the mean length
        audio_per_update_s=lambda stats: stats.get("bsz", 0.0) * mean_s,
        on_record=check_record, name=f"finetune {name}",
        # fine-tuning trains fp32 on the CPU: never pretraining's autocast, even if the user's environment asks
        env=((CPU_AUTOCAST_ENV, ""),)))
    best = Path(out) / "checkpoints" / BEST
    if not best.is_file():
        raise TrainingError(f"finetune {name}: fairseq wrote no {save_dir}/{BEST} (no validation ran?); lower "
                            "finetune.schedule.validate_interval_updates below max_update")
    best_update = export_portable(best, Path(out) / "checkpoint.pt", start)
    return final_metrics(result.records, best_update)
