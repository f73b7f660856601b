"""Training steps as multi-process jobs, when the recipe names an `accelerate:` config.

    accelerate launch --config_file configs/accelerate/zero3.yaml -m trimpi step STEP/launch/step.json

Each VM-CPT, SFT and RL step is its own job: the parent writes the step (kind, config and its
inputs, recursively: everything its hash covers) to STEP/launch/step.json; every process of the
job rebuilds the step, checks that it hashes to the same id and runs the very executor the
single-process path runs, so the step's options have one source of truth (the plan). Rank 0
writes the executor's result to STEP/launch/result.json for the parent's done.json. A killed
job resumes like an in-process step: the executors resume from the step's last checkpoint.
Data, base, warm-up and eval steps run in the parent, once.

The job's output goes to the parent's stderr and to STEP/launch/log.txt; a failure is one line
(the job's last error line and its exit status). Ctrl-C or SIGTERM stops the whole job.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trimpi.data.io import read_json, write_json
from trimpi.errors import ConfigError, TrimpiError
from trimpi.pipeline.execute import EXECUTORS, Context
from trimpi.pipeline.steps import Step
from trimpi.train.distributed import trained_with

LAUNCHED = ("cpt", "sft", "rl")  # step kinds that run as accelerate jobs
LAUNCH_DIR = "launch"
DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "MULTI_CPU", "DEEPSPEED", "FSDP", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU",
                     "MULTI_HPU", "XLA", "MEGATRON_LM")
RANK_PREFIX = re.compile(r"^\[(?:default|rank)\d+\]:")  # torchrun's per-worker prefix
STOP_GRACE_S = 15.0  # how long a stopped job may take to exit before it is killed harder


@dataclass(frozen=True)
class Launcher:
    """How training steps are launched: an accelerate config file and, optionally, a process count."""

    config: str
    distributed_type: str
    num_processes: int | None = None  # None: the config's own


def read_accelerate_config(path: str | Path, where: str = "accelerate") -> dict[str, Any]:
    """The accelerate config file as a mapping; any problem is a one-line ConfigError naming the file."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{where}: {path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: {path}: expected an accelerate config (a mapping)")
    kind = str(values.get("distributed_type", "NO"))
    if kind not in DISTRIBUTED_TYPES:
        raise ConfigError(f"{where}: {path}: distributed_type: unknown value {kind!r} "
                          f"(expected one of {', '.join(DISTRIBUTED_TYPES)})")
    return values


def make_launcher(config: str | None, num_processes: int | None = None) -> Launcher | None:
    """The launcher for a recipe's `accelerate:` config (None: every step runs in process)."""
    if config is None:
        if num_processes is not None:
            raise ConfigError("--num-processes: the recipe names no accelerate: config to launch with")
        return None
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num-processes: must be at least 1, got {num_processes}")
    values = read_accelerate_config(config)
    return Launcher(config=os.path.normpath(config), distributed_type=str(values.get("distributed_type", "NO")),
                    num_processes=num_processes)


def launched(step: Step, ctx: Context) -> bool:
    return ctx.launcher is not None and step.kind in LAUNCHED


def step_file(step: Step, store: Path) -> Path:
    return step.dir(store) / LAUNCH_DIR / "step.json"


def accelerate_program() -> list[str]:
    """`accelerate` next to this Python (a virtual environment's), else on PATH, else its module."""
    beside = Path(sys.executable).parent / "accelerate"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("accelerate")
    return [found] if found else [sys.executable, "-m", "accelerate.commands.launch"]


def launch_command(launcher: Launcher, step: Step, store: Path, progress: bool = True) -> list[str]:
    """The exact command that runs `step` as a job."""
    program = accelerate_program()
    cmd = [*program, *(["launch"] if program[-1] != "accelerate.commands.launch" else []),
           "--config_file", launcher.config]
    if launcher.num_processes is not None:
        cmd += ["--num_processes", str(launcher.num_processes)]
    return [*cmd, "-m", "trimpi", "step", str(step_file(step, store)), *([] if progress else ["--no-progress"])]


def describe(step: Step, ctx: Context) -> str:
    """How `trimpi run` runs a step: its launch command, or "in process"."""
    if not launched(step, ctx):
        return "in process"
    return shlex.join(launch_command(ctx.launcher, step, ctx.out, ctx.progress))


def check_launchable(launcher: Launcher) -> None:
    """What an actual launch needs beyond accelerate (a dry run needs none of it)."""
    if launcher.distributed_type == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"accelerate: {launcher.config} uses DeepSpeed, which is not installed "
                          "(pip install deepspeed)")


def step_record(step: Step) -> dict[str, Any]:
    """A step and its inputs, recursively: everything its id is computed from."""
    return {"kind": step.kind, "config": step.config, "inputs": [step_record(s) for s in step.inputs]}


def step_from_record(record: dict[str, Any]) -> Step:
    return Step(record["kind"], record["config"], [step_from_record(r) for r in record["inputs"]])


# ---- the parent: run a step as a job --------------------------------------------------------------------------


def run_launched(step: Step, ctx: Context, write: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run `step` as an accelerate job and return its executor's result (raises a one-line TrimpiError)."""
    launch = step.dir(ctx.out) / LAUNCH_DIR
    launch.mkdir(parents=True, exist_ok=True)
    (launch / "result.json").unlink(missing_ok=True)
    write_json(step_file(step, ctx.out), {"id": step.id, "store": str(Path(ctx.out).resolve()),
                                          "step": step_record(step)})
    cmd = launch_command(ctx.launcher, step, ctx.out, ctx.progress)
    release_gpu_memory()
    code, tail = run_job(cmd, launch / "log.txt", write or _to_stderr)
    if code != 0:
        raise TrimpiError(f"{step.id}: training job failed (exit {code}): {last_error(tail)} "
                          f"(full log: {launch / 'log.txt'})")
    if not (launch / "result.json").is_file():
        raise TrimpiError(f"{step.id}: training job exited without a result (full log: {launch / 'log.txt'})")
    return read_json(launch / "result.json")


def release_gpu_memory() -> None:
    """Give back the GPU memory this process cached for its in-process steps (an evaluation before the job):
    the job's rank 0 shares the first GPU with this process."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def _to_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def child_env() -> dict[str, str]:
    """The parent's environment, with this trimpi first on the path: the job runs the same code."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([src, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env["PYTHONSAFEPATH"] = "1"  # `-m trimpi` must not put the working directory on sys.path (`trimpi.trust`)
    return env


def run_job(cmd: list[str], log: Path, write: Callable[[str], None]) -> tuple[int, str]:
    """Run `cmd` in its own process group, copying its output to `write` and `log`; returns (exit status,
    the output's last 64 KiB). Any exception here (KeyboardInterrupt included) stops the job first."""
    tail = b""
    previous = _raise_on_sigterm()
    try:
        with open(log, "ab") as f:
            f.write(f"$ {shlex.join(cmd)}\n".encode())
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(),
                                    start_new_session=True)
            try:
                while chunk := os.read(proc.stdout.fileno(), 65536):
                    f.write(chunk)
                    f.flush()
                    tail = (tail + chunk)[-65536:]
                    write(chunk.decode(errors="replace"))
                code = proc.wait()
            except BaseException:
                stop_job(proc)
                raise
            finally:
                proc.stdout.close()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return code, tail.decode(errors="replace")


def _raise_on_sigterm():
    """While a job runs, SIGTERM on the parent stops the job (as Ctrl-C does) instead of orphaning it. A
    handler already installed (the CLI's, which unwinds with exit status 143) is kept: it raises too."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        return None


def stop_job(proc: subprocess.Popen) -> None:
    """SIGINT to the job's process group (every rank checkpoints nothing more and exits), then SIGTERM,
    then SIGKILL, each after a grace period."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            continue
        try:  # the launcher is gone; its workers may not be
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break


def last_error(output: str) -> str:
    """The line of a job's output that says what went wrong: trimpi's `error:` line, else the last
    exception line that is not the launcher's own report, else the last non-empty line."""
    lines = [RANK_PREFIX.sub("", line).strip() for line in output.replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    launcher_noise = ("torch.distributed", "subprocess.CalledProcessError", "ChildFailedError")
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if (head.endswith(("Error", "Exception", "Interrupt")) and " " not in head
                and not line.startswith(launcher_noise)):
            return line
    return lines[-1] if lines else "no output"


# ---- the job: `trimpi step FILE` ------------------------------------------------------------------------------


def run_step_file(path: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run the step written to `path` (every process of the job does); rank 0 writes its result, with the
    job's process count."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: step file not found")
    spec = read_json(path)
    step = step_from_record(spec["step"])
    if step.id != spec["id"]:
        raise ConfigError(f"{path}: the step hashes to {step.id}, not {spec['id']} (a different trimpi version?)")
    result = EXECUTORS[step.kind](step, Context(out=Path(spec["store"]), progress=progress))
    # recorded in done.json: the process count, and how a training step's trainer was distributed
    result = {**result, "processes": int(os.environ.get("WORLD_SIZE", "1"))}
    distributed = trained_with() if step.kind in LAUNCHED else None
    if distributed is not None:
        result["distributed"] = distributed  # e.g. "deepspeed-zero3"
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(path.parent / "result.json", result)
    return result
