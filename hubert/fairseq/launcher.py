"""Run fairseq-hydra-train for any task: the config file, resume, the subprocess,
json-log streaming with a per-record hook, and DVCLive.

One run, top to bottom (:func:`launch`):

1. The caller writes the complete fairseq config (:func:`config_yaml`) with every
   path relative to the repository root, which is also the training process's
   working directory (``hydra.run.dir: .``): the file, the checkpoints and the
   logs are then the same from any clone path.
2. :func:`prepare_save_dir` resumes from fairseq's ``checkpoint_last.pt`` only
   when the config and its inputs are unchanged (:func:`fingerprint`).
3. fairseq-hydra-train runs as a subprocess whose json log is streamed (still
   printed): every ``train_inner`` and ``valid`` record goes to a persistent
   ``train_log.jsonl`` (so a resumed run's curves start at update 1), to
   DVCLive at step = num_updates, and to the caller's hook, which may stop the
   run (:class:`RunRejected`).

What is task-specific (the plotted values, the audio an update trained on, the
checks) comes in as functions; :mod:`hubert.pretrain` supplies them for HuBERT
pretraining.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hubert.fairseq.checkpoint import checkpoint_updates

# fairseq imports common.user_dir as a top-level module before it builds the task or
# loads a checkpoint: our fixes to fairseq live there
PLUGIN_DIR = Path(__file__).resolve().parent / "hubert_dvc_plugin"
LOG_FILE = "train_log.jsonl"
RUN_FILE = "run.json"
LAST = "checkpoint_last.pt"
# fairseq has no "off" for its epoch-based validation and save schedules; ours
# run by updates (validate_interval_updates, save_interval_updates).
NEVER_EPOCHS = 1_000_000


class TrainingError(RuntimeError):
    """fairseq-hydra-train failed or was killed, or its log lacks what the run needs."""


class RunRejected(TrainingError):
    """Raised by a record hook: the run is wrong from the start (e.g. its first loss is
    not at chance). The launcher stops fairseq and empties the save directory, so
    that nothing of the run is resumed."""


# ---------------------------------------------------------------- config and paths
def config_yaml(config: dict[str, Any], header: str) -> str:
    """The config file's text: ``header`` (comment lines) then the YAML, keys in the given order."""
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def hydra_block() -> dict[str, Any]:
    """Config keys that keep Hydra in the launch directory (the repository root) and stop it
    writing a .hydra/ folder or hydra_train.log there."""
    return {"defaults": [{"override hydra/job_logging": "stdout"}],
            "hydra": {"run": {"dir": "."}, "output_subdir": None}}


def portable_path(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root`` (the training working directory) when it lies
    inside it, so configs and checkpoints hold no clone-specific prefix; an
    outside path stays absolute (it works, but only on this machine)."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(Path(os.path.abspath(root))).as_posix()
    except ValueError:
        return absolute.as_posix()


def plugin_dir(root: str | Path) -> str:
    """common.user_dir: this package's fairseq plugin, as a path from ``root``."""
    return portable_path(PLUGIN_DIR, root)


# ---------------------------------------------------------------- resume
def fingerprint(config_text: str, inputs: Iterable[str | Path]) -> str:
    """sha256 of the config and the bytes of its input files (manifests, labels,
    dictionary): a checkpoint is resumed only under the same fingerprint. The
    audio is not hashed: labels are computed from it, so new audio means new labels."""
    h = hashlib.sha256(config_text.encode("utf-8"))
    for path in inputs:
        h.update(b"\0" + Path(path).name.encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def prepare_save_dir(save_dir: str | Path, fp: str, shown: str | None = None) -> tuple[int, str]:
    """Decide between resuming and starting over; returns (update to resume from, why).

    A checkpoint is resumed only when the fingerprint stored beside it equals
    ``fp``; otherwise the directory is emptied (checkpoints of another config
    or other labels must not be continued). The training log is cut back to the
    checkpoint, since fairseq redoes the updates logged after it. Messages name
    the directory as ``shown`` (default: as given).
    """
    save_dir = Path(save_dir)
    shown = shown or str(save_dir)
    run_file, last = save_dir / RUN_FILE, save_dir / LAST
    stored = json.loads(run_file.read_text(encoding="utf-8")).get("fingerprint") if run_file.is_file() else None
    resume, why = 0, "no checkpoint: starting from update 0"
    if stored is not None and stored != fp:
        why = (f"the config or its inputs changed since the checkpoints in {shown} were written "
               f"(fingerprint {stored[:12]} -> {fp[:12]}): starting over from update 0")
    elif stored is not None and last.is_file():
        try:
            resume = checkpoint_updates(last)
            why = f"resuming from {shown}/{LAST} at update {resume} (same config and inputs)"
        except Exception as exc:  # a checkpoint cut short while being copied
            why = f"{shown}/{LAST} cannot be read ({exc}): starting over from update 0"
    kept = [r for r in read_log(save_dir) if r.step <= resume]
    if resume and not kept:
        resume, why = 0, f"{shown}/{LOG_FILE} is missing, so the curves could not be complete: starting over"
    if resume == 0 and save_dir.exists():
        shutil.rmtree(save_dir)
        kept = []
    save_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"fingerprint": fp}, indent=2) + "\n", encoding="utf-8")
    (save_dir / LOG_FILE).write_text("".join(r.to_json() + "\n" for r in kept), encoding="utf-8")
    return resume, why


# ---------------------------------------------------------------- log records
# fairseq's json progress records: "... | train_inner | {...}" (fairseq's format)
# or "[...][valid][INFO] - {...}" (Hydra's); values are strings.
_RECORD = re.compile(r"[|\[]\s*(train_inner|train|valid)\s*[|\]].*?(\{.*\})\s*$")


def parse_log_line(line: str) -> tuple[str, dict[str, float]] | None:
    """(tag, stats) of a fairseq json progress line, keys without the ``valid_`` /
    ``train_`` prefix of end-of-epoch and validation records; None for other lines."""
    match = _RECORD.search(line)
    if not match:
        return None
    tag = match.group(1)
    try:
        raw = json.loads(match.group(2))
    except json.JSONDecodeError:
        return None
    prefix = f"{tag}_" if tag in ("train", "valid") else ""
    stats: dict[str, float] = {}
    for key, value in raw.items():
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
        try:
            stats[key] = float(value)
        except (TypeError, ValueError):
            continue
    return tag, stats


@dataclass(frozen=True)
class Record:
    """One logged record: tag train_inner | valid, step = num_updates, fairseq's
    values, and our clock: cumulative seconds in the training loop and
    cumulative audio seconds trained at this record (across resumed runs)."""

    tag: str
    step: int
    stats: dict[str, float]
    train_s: float
    audio_s: float

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Record:
        return cls(**json.loads(line))


def read_log(save_dir: str | Path) -> list[Record]:
    path = Path(save_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [Record.from_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- DVCLive
PlotValues = Callable[[Record, "Record | None"], dict[str, float]]


class LivePlots:
    """Per-record DVCLive plots: ``train/<name>`` and ``valid/<name>`` at step = num_updates.

    ``values(record, previous record of the same tag)`` says what one record plots.
    """

    def __init__(self, live_dir: str | Path, values: PlotValues) -> None:
        from dvclive import Live

        # dvcyaml=False: the plots are declared in the repository's dvc.yaml, and
        # DVCLive must not rewrite it; save_dvc_exp=False: DVC runs the stage.
        self.live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False)
        self.values = values
        self.previous: dict[str, Record] = {}

    def log(self, record: Record) -> None:
        prefix = "train" if record.tag == "train_inner" else "valid"
        self.live.step = record.step
        for name, value in self.values(record, self.previous.get(record.tag)).items():
            self.live.log_metric(f"{prefix}/{name}", value)
        self.previous[record.tag] = record

    def close(self) -> None:
        self.live.end()


# ---------------------------------------------------------------- the run
@dataclass(frozen=True)
class Run:
    """What :func:`launch` needs to know about one training run.

    root: the directory fairseq runs in (the repository root); config_dir,
    config_name: the config file, relative to root; save_dir: fairseq's
    checkpoint.save_dir, relative to root; fp: the resume fingerprint;
    max_update: the last update; live_dir: DVCLive's folder; plot_values: what a
    record plots; audio_per_update_s(stats): audio seconds one update trained on
    (averaged over a train_inner record's interval); on_record(record, line,
    first): called for every record as it arrives, ``first`` true for the first
    train_inner record of a run that starts from update 0; it may raise
    (:class:`RunRejected` to discard the run); name: the prefix of printed messages.
    """

    root: Path
    config_dir: str
    config_name: str
    save_dir: str
    fp: str
    max_update: int
    live_dir: str | Path
    plot_values: PlotValues
    audio_per_update_s: Callable[[dict[str, float]], float]
    on_record: Callable[[Record, str, bool], None]
    name: str = "fairseq"


@dataclass(frozen=True)
class RunResult:
    records: list[Record]
    resumed_from: int
    process_s: float


def train_command(config_dir: str, config_name: str) -> list[str]:
    """fairseq-hydra-train with the interpreter running us (the same venv)."""
    return [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", config_dir, "--config-name", config_name]


def launch(run: Run) -> RunResult:
    """Run (or resume) fairseq-hydra-train as ``run`` says.

    The DVCLive directory is rebuilt from the kept log first, so a resumed run's
    plots start at update 1. Raises TrainingError when fairseq exits with an
    error (its last checkpoint is kept for the next run to resume) and whatever
    ``run.on_record`` raises, after stopping fairseq (emptying the save
    directory for :class:`RunRejected`).
    """
    save_path = run.root / run.save_dir
    resume, why = prepare_save_dir(save_path, run.fp, shown=run.save_dir)
    print(f"{run.name}: {why}")
    records = read_log(save_path)
    plots = LivePlots(run.live_dir, run.plot_values)
    try:
        for r in records:
            plots.log(r)
        if resume >= run.max_update:
            print(f"{run.name}: {run.save_dir}/{LAST} already has {resume} of {run.max_update} updates: "
                 "nothing to train")
            return RunResult(records, resume, 0.0)
        return _stream(run, records, plots, resume)
    finally:
        plots.close()


def _stream(run: Run, records: list[Record], plots: LivePlots, resume: int) -> RunResult:
    save_path = run.root / run.save_dir
    cmd = train_command(run.config_dir, run.config_name)
    print(f"{run.name}: " + " ".join(cmd))
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # records must arrive when logged: we time them
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=run.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    base_train_s = records[-1].train_s if records else 0.0
    audio_s = records[-1].audio_s if records else 0.0
    last_step = {"train_inner": resume, "valid": resume}
    loop_start = None
    first_pending = resume == 0
    try:
        with open(save_path / LOG_FILE, "a", encoding="utf-8") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                now = time.monotonic()
                print(line.rstrip("\n"))
                if loop_start is None and "Start iterating over samples" in line:
                    loop_start = now  # fairseq's training loop begins: start-up time is not training time
                parsed = parse_log_line(line)
                if parsed is None or parsed[0] == "train":
                    continue  # end-of-epoch averages repeat what train_inner logged
                tag, stats = parsed
                step = int(stats.get("num_updates", last_step[tag]))
                if loop_start is None:
                    loop_start = start
                if tag == "train_inner":
                    audio_s += run.audio_per_update_s(stats) * (step - last_step[tag])
                last_step[tag] = step
                record = Record(tag, step, stats, base_train_s + (now - loop_start), audio_s)
                first = first_pending and tag == "train_inner"
                first_pending = first_pending and not first
                run.on_record(record, line.rstrip("\n"), first)
                log.write(record.to_json() + "\n")
                log.flush()
                records.append(record)
                plots.log(record)
        code = proc.wait()
    except RunRejected:
        _stop(proc)
        shutil.rmtree(save_path)  # nothing of this run may be resumed
        raise
    except BaseException:
        _stop(proc)
        raise
    process_s = time.monotonic() - start
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code} (see its output above)"
        if (save_path / LAST).is_file():
            then = (f"Its last checkpoint ({run.save_dir}/{LAST}: update {checkpoint_updates(save_path / LAST)}) "
                    "is kept: run the stage again (dvc repro) to resume from it.")
        else:
            then = "It saved no checkpoint: the next run starts from update 0."
        raise TrainingError(f"fairseq-hydra-train {how}. {then}")
    return RunResult(records, resume, process_s)


def _stop(proc: subprocess.Popen) -> None:
    """Stop fairseq and the processes it started (distributed workers, data loaders)."""
    import psutil

    if proc.poll() is not None:
        return
    try:
        family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
