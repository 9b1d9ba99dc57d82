"""Safe loading of fairseq HuBERT checkpoints.

fairseq checkpoints are pickles. torch.load(weights_only=True) refuses every
class that is not on torch's allow-list; fairseq HuBERT checkpoints (ours,
fairseq-hydra-train's, the public ones) hold exactly one such class,
fairseq.data.dictionary.Dictionary (in ``task_state``). We allow that class
for the duration of one load (torch.serialization.safe_globals), never the
process-wide switch and never weights_only=False, so a checkpoint carrying
anything else (e.g. a reduce to os.system) is still refused.

:func:`load_hubert` rebuilds the model from the checkpoint alone: the task's
dictionaries come from the checkpoint's ``task_state`` (or, when a checkpoint
has none, from the size of its label embeddings), so the data and label
directories the model was trained on need not exist on this machine.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs classes outside the allow-list (or is not a torch checkpoint)."""


def allowed_globals() -> list[type]:
    """The classes a fairseq HuBERT checkpoint may contain beyond torch's own allow-list."""
    from fairseq.data.dictionary import Dictionary

    return [Dictionary]


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(path, weights_only=True) with :func:`allowed_globals` allowed for this call only.

    Raises UnsafeCheckpointError naming the file and the globals it would need
    (from torch.serialization.get_unsafe_globals_in_checkpoint).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the --checkpoint path "
                                "(run the pretrain stage first)")
    allowed = allowed_globals()
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as inner:  # not even a torch zip archive
            raise ValueError(f"{path}: not a readable torch checkpoint ({exc}; {inner}); the file is corrupt or "
                             "not a checkpoint: re-run the stage that wrote it") from exc
        names = {f"{c.__module__}.{c.__qualname__}" for c in allowed}
        extra = sorted(set(needed) - names)
        raise UnsafeCheckpointError(
            f"{path}: refused to unpickle: it needs globals outside the allow-list {sorted(names)}: {extra}. "
            "Only load checkpoints you trust; an old fairseq checkpoint that stores argparse.Namespace args "
            "can be re-saved with its cfg as a plain dict (fairseq's convert_namespace_to_omegaconf) "
            f"[torch: {str(exc).splitlines()[0]}]"
        ) from exc
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a fairseq checkpoint (expected a dict with 'model' and 'cfg', "
                         f"got {type(state).__name__} with keys {sorted(state) if isinstance(state, dict) else '-'})")
    return state


def _checkpoint_cfg(state: dict[str, Any], path: Path):
    from omegaconf import OmegaConf

    if state.get("cfg") is not None:
        # fairseq stores the resolved config as a plain container (trainer.state_dict)
        return OmegaConf.create(state["cfg"], flags={"allow_objects": True})
    if state.get("args") is not None:
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        return convert_namespace_to_omegaconf(state["args"])
    raise ValueError(f"{path}: checkpoint has neither 'cfg' nor 'args'; it was not written by fairseq")


def _dictionaries_from_weights(state: dict[str, Any], n_label_sets: int, path: Path) -> list:
    """Stand-in dictionaries when a checkpoint carries no task_state: one per label
    set, sized from label_embs_concat (K symbols + fairseq's 4 specials)."""
    from fairseq.data.dictionary import Dictionary

    embs = state["model"].get("label_embs_concat")
    if embs is None:
        raise ValueError(f"{path}: no task_state and no label_embs_concat: cannot tell the label dictionaries")
    if n_label_sets != 1:
        raise ValueError(f"{path}: no task_state and {n_label_sets} label sets: the split of label_embs_concat "
                         "between dictionaries is unknown; re-save the checkpoint with its task_state")
    d = Dictionary()
    for i in range(embs.shape[0] - len(d)):
        d.add_symbol(str(i))
    return [d]


def read_checkpoint(path: str | Path, model_name: str, needs: str) -> tuple[dict[str, Any], Any]:
    """(state, cfg) of a fairseq checkpoint whose model is ``model_name``; otherwise a
    ValueError naming the file, its model type and ``needs`` (what the caller needs)."""
    path = Path(path)
    state = safe_load(path)
    cfg = _checkpoint_cfg(state, path)
    name = cfg.model.get("_name")
    if name != model_name:
        raise ValueError(f"{path}: model type {name!r}; {needs}")
    return state, cfg


def build_model(state: dict[str, Any], cfg, task_state: dict[str, Any], device: str | torch.device = "cpu"):
    """(model in eval mode on ``device``, task) rebuilt by fairseq from the checkpoint alone:
    its task from cfg.task with ``task_state`` (the dictionaries), its weights strictly."""
    from fairseq import tasks

    task = tasks.setup_task(cfg.task, from_checkpoint=True)
    task.load_state_dict(task_state)
    model = task.build_model(cfg.model, from_checkpoint=True)
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    return model.eval().to(device), task


def load_hubert(path: str | Path, device: str | torch.device = "cpu"):
    """Load a pretrained fairseq HuBERT checkpoint (model._name == 'hubert').

    Returns (fairseq HubertModel in eval mode on ``device``, task cfg
    (HubertPretrainingConfig: sample_rate, normalize, label_rate, ...)).
    """
    path = Path(path)
    state, cfg = read_checkpoint(path, "hubert", "layer features need a pretrained HuBERT checkpoint "
                                 "(model._name 'hubert'), e.g. the pretrain stage's checkpoint_best.pt")
    task_state = state.get("task_state") or {}
    if "dictionaries" not in task_state:
        task_state = {"dictionaries": _dictionaries_from_weights(state, len(cfg.task.labels), path)}
    model, task = build_model(state, cfg, task_state, device)
    return model, task.cfg


def checkpoint_updates(path: str | Path) -> int:
    """num_updates stored in a fairseq checkpoint."""
    return int(safe_load(path)["optimizer_history"][-1]["num_updates"])


def export_checkpoint(src: str | Path, dst: str | Path,
                      edit: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Copy a fairseq checkpoint without its optimizer state (the model that later
    stages and other toolkits load); returns its num_updates. ``edit`` may change
    the state before it is written (the finetune stage makes it portable).

    The trainer's meters and elapsed time go too: they are only needed to resume
    training, and without them the same training gives the same bytes.
    """
    state = safe_load(src)
    if edit is not None:
        edit(state)
    state.pop("last_optimizer_state", None)
    for volatile in ("metrics", "previous_training_time"):
        state.get("extra_state", {}).pop(volatile, None)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, dst)
    return int(state["optimizer_history"][-1]["num_updates"])

