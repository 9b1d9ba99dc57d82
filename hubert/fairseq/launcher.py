"""Run fairseq-hydra-train for any task: the config file, resume, the subprocess,
json-log streaming with a per-record hook, and DVCLive.

One run, top to bottom (:func:`launch`):

1. The caller writes the complete fairseq config (:func:`config_yaml`) with every
   path relative to the repository root, which is also the training process's
   working directory (``hydra.run.dir: .``): the file, the checkpoints and the
   logs are then the same from any clone path.
2. :func:`prepare_save_dir` resumes from fairseq's ``checkpoint_last.pt`` unless
   what the checkpoints were trained on changed; then they are set aside, never
   deleted.
3. fairseq-hydra-train runs as a subprocess whose json log is streamed: every
   ``train_inner`` and ``valid`` record goes to a persistent ``train_log.jsonl``
   (so a resumed run's curves start at update 1), to DVCLive at step =
   num_updates, and to the caller's hook, which may stop the run
   (:class:`RunRejected`). fairseq's whole output (of the latest process; the
   records of every one are in ``train_log.jsonl``) goes to ``fairseq.log`` beside
   the checkpoints; the console gets its other lines, one line per validation
   and a progress line (updates done of total, rate, time left) at most every
   :data:`PROGRESS_EVERY_S` seconds, so a long run neither goes quiet nor floods
   a CI log with a record per ``log_interval``.

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
import threading
import time
from collections.abc import Callable
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
    not at chance). The launcher stops fairseq and sets the save directory aside,
    so that nothing of the run is resumed."""


# ---------------------------------------------------------------- config and paths
def config_yaml(config: dict[str, Any], header: str) -> str:
    """The config file's text: ``header`` (comment lines) then the YAML, keys in the given order."""
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def hydra_block() -> dict[str, Any]:
    """Config keys that keep Hydra in the launch directory (the repository root) and stop it
    writing a .hydra/ folder or hydra_train.log there."""
    return {"defaults": [{"override hydra/job_logging": "stdout"}],
            "hydra": {"run": {"dir": "."}, "output_subdir": None}}


def common_block(seed: int, gpus: int, precision: str, cpu_autocast: bool, log_interval: int,
                 user_dir: str) -> dict[str, Any]:
    """fairseq's ``common`` block of every run here (pretraining and fine-tuning)."""
    return {
        "seed": seed,
        "cpu": gpus == 0,
        "fp16": precision == "fp16",
        # on the CPU bf16 is autocast around fairseq's fp32 training (the plugin), not fairseq's bf16
        "bf16": precision == "bf16" and not cpu_autocast,
        "log_format": "json",
        "log_interval": log_interval,
        # fairseq's own log format names the logger ("| train_inner |"), which is how records are told apart
        "reset_logging": True,
        "user_dir": user_dir,
    }


def config_identity(config: dict[str, Any], continuable: tuple[str, ...]) -> dict[str, str]:
    """Every config key that shapes the training, as run.json stores it: all but those starting
    with one of ``continuable`` (how long, where, on what hardware, how often to log,
    validate and save; paths, whose bytes the caller adds)."""
    return {k: v for k, v in flatten(config).items() if not k.startswith(continuable)}


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
SET_ASIDE = "set_aside"  # beside the save directory: checkpoints that will not be continued


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (labels, manifests: what a checkpoint was trained on)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"section.key": "value"}`` of a nested config (values as strings, for run.json and messages)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return out


@dataclass(frozen=True)
class Resume:
    """What :func:`prepare_save_dir` decided: the update training continues from (0 =
    start), and why."""

    update: int
    why: str


def set_aside(save_dir: Path, reason: str, file: Path | None = None) -> Path:
    """Move ``save_dir`` (or only ``file`` in it) to ``set_aside/NNN-<reason>/`` beside it,
    with the reason in REASON.txt: checkpoints are never deleted, only moved out of
    fairseq's way."""
    parent = save_dir.parent / SET_ASIDE
    parent.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")[:60]
    dest = parent / f"{len(list(parent.iterdir())) + 1:03d}-{slug}"
    if file is None:
        shutil.move(str(save_dir), dest)
    else:
        dest.mkdir()
        shutil.move(str(file), dest / file.name)
    (dest / "REASON.txt").write_text(reason + "\n", encoding="utf-8")
    return dest


def intact_checkpoints(save_dir: Path) -> list[tuple[int, Path]]:
    """(num_updates, path) of fairseq's numbered checkpoints (``checkpoint_<epoch>_<update>.pt``,
    ``checkpoint<epoch>.pt``) that can be read, newest first."""
    found = []
    for path in save_dir.glob("checkpoint*.pt"):
        if path.name in (LAST, "checkpoint_best.pt") or not re.fullmatch(r"checkpoint_?\d+(_\d+)?\.pt", path.name):
            continue
        try:
            found.append((checkpoint_updates(path), path))
        except Exception:  # torn as well: not a candidate
            continue
    return sorted(found, key=lambda x: (-x[0], x[1].name))


def recover_last(save_dir: Path, shown: str, exc: Exception) -> tuple[int, str | None]:
    """``checkpoint_last.pt`` cannot be read (a kill while fairseq wrote it): set it aside and
    continue from the newest intact numbered checkpoint, copied to its place. Returns
    (update, what was done), or (0, None) when no intact checkpoint is left."""
    intact = intact_checkpoints(save_dir)
    if not intact:
        return 0, None
    update, path = intact[0]
    reason = f"{shown}/{LAST} cannot be read ({exc})"
    where = set_aside(save_dir, reason, save_dir / LAST)
    tmp = save_dir / (LAST + ".tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, save_dir / LAST)
    return update, f"{reason}: set aside in {where}; continuing from {path.name}, the newest intact checkpoint"


def detach_links(folder: Path) -> list[Path]:
    """Give every file in ``folder`` that shares its inode (a DVC cache hardlink, or a
    worktree checked out from the same cache) a copy of its own, and return them.

    fairseq writes checkpoints in place (``torch.save`` and its copy to
    ``checkpoint_last.pt`` truncate the existing file), and run.json and the log
    are rewritten and appended to in place: through a hardlink, that rewrites the
    DVC cache's object, and every checkout of the committed run would then hold
    the continued one. ``dvc repro`` unprotects a persistent output first; a stage
    run by hand does not (and as root the cache's read-only mode does not stop the
    write).
    """
    detached = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        # a symlink (DVC's link when the cache is on another filesystem) writes through to its target too
        if path.is_file() and (path.is_symlink() or path.stat().st_nlink > 1):
            tmp = path.with_name(path.name + ".detach")
            shutil.copyfile(path, tmp)
            tmp.chmod(0o644)  # the cache's objects are read-only
            os.replace(tmp, path)
            detached.append(path)
    return detached


def prepare_save_dir(save_dir: str | Path, identity: dict[str, str], config: dict[str, Any],
                     shown: str | None = None) -> Resume:
    """Continue from ``checkpoint_last.pt`` unless the checkpoints became meaningless.

    ``identity`` holds what makes a checkpoint belong to this run (the caller's
    choice: for pretraining the model's shape, the label set and the bytes of
    the data); when it differs from the one stored beside the checkpoints in
    run.json, they are set aside (:func:`set_aside`) and training starts over.
    Any other change (max_update, GPUs, workers, logging, ...) continues from
    the checkpoint and is listed in the message. The training log is
    cut back to the checkpoint, since fairseq redoes the updates logged after
    it. Messages name the directory as ``shown`` (default: as given).
    """
    save_dir = Path(save_dir)
    shown = shown or str(save_dir)
    # before anything here or in fairseq writes into the folder (run.json and the log below, in place)
    detached = detach_links(save_dir)
    run_file, last = save_dir / RUN_FILE, save_dir / LAST
    stored = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else {}
    now = flatten(config)
    resume, why, problem, recovered = 0, "no checkpoint: starting from update 0", None, None
    if last.is_file() and "identity" not in stored:
        problem = f"{shown} holds checkpoints whose run.json does not say what they were trained on"
    elif last.is_file() and stored["identity"] != identity:
        changed = sorted(k for k in set(identity) | set(stored["identity"])
                         if identity.get(k) != stored["identity"].get(k))
        problem = f"what the checkpoints in {shown} were trained on changed: {', '.join(changed)}"
    elif last.is_file():
        try:
            resume = checkpoint_updates(last)
        except Exception as exc:  # a checkpoint cut short while being written
            resume, recovered = recover_last(save_dir, shown, exc)
            if recovered is None:
                problem = f"{shown}/{LAST} cannot be read ({exc}) and no intact checkpoint is left beside it"
        if resume and not [r for r in read_log(save_dir) if r.step <= resume]:
            resume, problem = 0, f"{shown}/{LOG_FILE} is missing, so the curves could not be complete"
    if problem:
        resume = 0
        why = f"{problem}: set aside in {set_aside(save_dir, problem)}; starting from update 0"
    elif resume:
        before = stored.get("config", {})
        changed = [f"{k} {before.get(k)} -> {v}" for k, v in now.items() if k in before and before[k] != v]
        why = f"resuming from {shown}/{LAST} at update {resume}"
        if recovered:
            why = f"{recovered}; resuming at update {resume}"
        why += f" (changed since: {'; '.join(changed)})" if changed else " (same config and inputs)"
    kept = [r for r in read_log(save_dir) if r.step <= resume] if resume else []
    save_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"identity": identity, "config": now}, indent=2, sort_keys=True) + "\n",
                        encoding="utf-8")
    (save_dir / LOG_FILE).write_text("".join(r.to_json() + "\n" for r in kept), encoding="utf-8")
    if detached:
        why += (f"; {', '.join(p.name for p in detached)} were linked to another copy (the DVC cache) and now "
                "have their own")
    return Resume(resume, why)


# ---------------------------------------------------------------- log records
# fairseq's json progress records: "... | train_inner | {...}" (fairseq's format)
# or "[...][valid][INFO] - {...}" (Hydra's); values are strings.
_RECORD = re.compile(r"[|\[]\s*(train_inner|train|valid\w*)\s*[|\]].*?(\{.*\})\s*$")


def parse_log_line(line: str) -> tuple[str, dict[str, float]] | None:
    """(tag, stats) of a fairseq json progress line, keys without the ``train_`` /
    ``valid_`` (``valid_en_``, ...: one tag per valid subset) prefix of end-of-epoch and
    validation records; None for other lines."""
    match = _RECORD.search(line)
    if not match:
        return None
    tag = match.group(1)
    try:
        raw = json.loads(match.group(2))
    except json.JSONDecodeError:
        return None
    prefix = f"{tag}_" if tag != "train_inner" else ""
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
    """The records of ``train_log.jsonl``; a last line cut short (a crash or a full disk
    while it was written) is dropped with a warning, a bad line before it is an error."""
    path = Path(save_dir) / LOG_FILE
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(Record.from_json(line))
        except (json.JSONDecodeError, TypeError) as exc:
            if i < len(lines) - 1:
                raise ValueError(f"{path}:{i + 1}: not a training-log record ({exc}); the log is damaged: move "
                                 f"{path.parent} aside to start over") from exc
            print(f"warning: {path}:{i + 1} was cut short ({exc}); dropped, training redoes it")
    return records


# ---------------------------------------------------------------- DVCLive
PlotValues = Callable[[Record, "Record | None"], dict[str, float]]


class LivePlots:
    """Per-record DVCLive plots: ``train/<name>`` and ``<valid subset>/<name>`` at step = num_updates.

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
        prefix = "train" if record.tag == "train_inner" else record.tag
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
    checkpoint.save_dir, relative to root; config: the fairseq config as written;
    identity: what the checkpoints must have been trained on to be continued
    (:func:`prepare_save_dir`); max_update: the last update; live_dir: DVCLive's folder; plot_values: what a
    record plots; audio_per_update_s(stats): audio seconds one update trained on
    (averaged over a train_inner record's interval); on_record(record, line,
    first): called for every record as it arrives, ``first`` true for the first
    train_inner record of a run that starts from update 0; it may raise
    (:class:`RunRejected` to discard the run); name: the prefix of printed messages;
    processes: the Hydra overrides of each fairseq process to start here (one per
    rank when the caller starts the ranks itself): the first one's log is
    streamed, the others print to our output; prefix: what starts the command
    (e.g. srun, to start it on every node of a SLURM allocation); env: variables
    added to the fairseq processes' environment.
    """

    root: Path
    config_dir: str
    config_name: str
    save_dir: str
    config: dict[str, Any]
    identity: dict[str, str]
    max_update: int
    live_dir: str | Path
    plot_values: PlotValues
    audio_per_update_s: Callable[[dict[str, float]], float]
    on_record: Callable[[Record, str, bool], None]
    name: str = "fairseq"
    processes: tuple[tuple[str, ...], ...] = ((),)
    prefix: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RunResult:
    records: list[Record]
    resumed_from: int
    process_s: float


PROGRESS_EVERY_S = 30.0
RAW_LOG = "fairseq.log"
# HUBERT_DVC_CONSOLE=records prints fairseq's records on the console too, as fairseq does (the test
# suite reads and kills runs by them)
CONSOLE_ENV = "HUBERT_DVC_CONSOLE"


class Progress:
    """The console's view of a training run's records: a line for the first update, then at most
    one every ``every_s`` seconds and one for the last; every validation. The rate is timed from
    the first logged update, so fairseq's start-up does not count."""

    def __init__(self, name: str, max_update: int, every_s: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.max_update, self.every_s, self.clock = name, max_update, every_s, clock
        self.first: tuple[float, int] | None = None
        self.shown: float | None = None

    def line(self, tag: str, step: int, stats: dict[str, Any]) -> str | None:
        loss = next((f"{k} {float(stats[k]):.3f}" for k in ("loss_m_0", "loss") if k in stats), "")
        if tag != "train_inner":
            return f"{self.name}: {tag} at update {step}: {loss}" if loss else None
        now = self.clock()
        if self.shown is not None and now - self.shown < self.every_s and step < self.max_update:
            return None
        self.shown = now
        if self.first is None:
            self.first = (now, step)
        t0, step0 = self.first
        rate = (step - step0) / (now - t0) if now > t0 else 0.0
        pace = f", {rate:.2f} updates/s" if rate > 0 else ""
        left = f", {_duration((self.max_update - step) / rate)} left" if rate > 0 and step < self.max_update else ""
        return (f"{self.name}: update {step}/{self.max_update} ({100 * step / self.max_update:.0f}%){pace}{left}"
                + (f", {loss}" if loss else ""))


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def train_command(config_dir: str, config_name: str) -> list[str]:
    """fairseq-hydra-train with the interpreter running us (the same venv)."""
    return [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", config_dir, "--config-name", config_name]


def launch(run: Run) -> RunResult:
    """Run (or resume) fairseq-hydra-train as ``run`` says.

    The DVCLive directory is rebuilt from the kept log first, so a resumed run's
    plots start at update 1. Raises TrainingError when fairseq exits with an
    error (its last checkpoint is kept for the next run to resume) and whatever
    ``run.on_record`` raises, after stopping fairseq (setting the save
    directory aside for :class:`RunRejected`).
    """
    save_path = run.root / run.save_dir
    decision = prepare_save_dir(save_path, run.identity, run.config, shown=run.save_dir)
    resume = decision.update
    print(f"{run.name}: {decision.why}")
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
    commands = [[*run.prefix, *train_command(run.config_dir, run.config_name), *overrides]
                for overrides in run.processes]
    for cmd in commands:
        print(f"{run.name}: " + " ".join(cmd))
    # records must arrive when logged (we time them); fairseq opens manifests and labels in text mode
    # with the locale's encoding, which is ASCII in a bare C locale: Mandarin labels need UTF-8
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONUTF8="1", **dict(run.env))
    start = time.monotonic()
    proc = subprocess.Popen(commands[0], cwd=run.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    # the other ranks log only warnings and errors (fairseq's non-master level): straight to our output
    others = [subprocess.Popen(cmd, cwd=run.root, env=env) for cmd in commands[1:]]
    failed_other = _watch(proc, others)
    base_train_s = records[-1].train_s if records else 0.0
    audio_s = records[-1].audio_s if records else 0.0
    last_step: dict[str, int] = {}
    loop_start = None
    first_pending = resume == 0
    progress = Progress(run.name, run.max_update)
    records_on_console = os.environ.get(CONSOLE_ENV, "") == "records"
    root = str(run.root.resolve())
    try:
        with open(save_path / LOG_FILE, "a", encoding="utf-8") as log, \
                open(save_path / RAW_LOG, "w", encoding="utf-8") as raw:
            assert proc.stdout is not None
            for line in proc.stdout:
                now = time.monotonic()
                raw.write(line.replace(root, "."))  # the log stays the same from any clone path
                if loop_start is None and "Start iterating over samples" in line:
                    loop_start = now  # fairseq's training loop begins: start-up time is not training time
                parsed = parse_log_line(line)
                if parsed is None or records_on_console:
                    print(line.rstrip("\n"))
                if parsed is None:
                    continue
                if parsed[0] == "train":
                    continue  # end-of-epoch averages repeat what train_inner logged
                tag, stats = parsed
                step = int(stats.get("num_updates", last_step.get(tag, resume)))
                if loop_start is None:
                    loop_start = start
                if tag == "train_inner":
                    audio_s += run.audio_per_update_s(stats) * (step - last_step.get(tag, resume))
                last_step[tag] = step
                if not records_on_console and (shown := progress.line(tag, step, stats)) is not None:
                    print(shown, flush=True)
                record = Record(tag, step, stats, base_train_s + (now - loop_start), audio_s)
                first = first_pending and tag == "train_inner"
                first_pending = first_pending and not first
                run.on_record(record, line.rstrip("\n"), first)
                log.write(record.to_json() + "\n")
                log.flush()
                records.append(record)
                plots.log(record)
        code = proc.wait()
        if failed_other:  # rank 0 was stopped because another rank failed: that one's code
            code = failed_other[0]
        elif code == 0:
            code = next((c for c in (p.wait() for p in others) if c != 0), 0)
    except RunRejected as exc:
        _stop(proc, *others)
        print(f"{run.name}: set aside in {set_aside(save_path, f'rejected: {exc}')}")  # never resumed, kept
        raise
    except BaseException:
        _stop(proc, *others)
        raise
    _stop(*others)
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


def _watch(proc: subprocess.Popen, others: list[subprocess.Popen]) -> list[int]:
    """When one of ``others`` fails, stop every process: the rest would wait for it in
    their next collective (gloo's timeout is 30 minutes). Returns a list that receives
    the failure's exit code when it happens, before the others are stopped."""
    failed: list[int] = []

    def wait_for(p: subprocess.Popen) -> None:
        code = p.wait()
        if code != 0 and not failed:
            failed.append(code)
            _stop(proc, *others)

    for p in others:
        threading.Thread(target=wait_for, args=(p,), daemon=True).start()
    return failed


def _stop(*procs: subprocess.Popen) -> None:
    """Stop fairseq processes and the processes they started (distributed workers, data loaders)."""
    for proc in procs:
        _stop_one(proc)


def _stop_one(proc: subprocess.Popen) -> None:
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
