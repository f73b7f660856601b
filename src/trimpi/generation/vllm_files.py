"""Where vLLM's copy of the model lives, and what is left of a vLLM run whose trainer died.

A vLLM engine (colocated or server) reads the trainer's model from files in a private directory,
`trimpi-vllm-<kind>-<owner pid>-XXXX`, in /dev/shm when it has room for the model twice (the model, then a
weight sync), else in the run directory (or the system temporary directory). A trainer killed with
SIGKILL or by the OOM killer cannot remove it; the next engine started on the machine does: every such
directory of this user whose owner process is gone is removed, after stopping a server still running
from it (`server.pid`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

PREFIX = "trimpi-vllm-"
SHM = Path("/dev/shm")
SERVER_PID = "server.pid"
MARGIN = 1.25  # room asked beyond the model's bytes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid(path: Path) -> int | None:
    """The owner pid in `trimpi-vllm-<kind>-<pid>-XXXX`, or None for another name."""
    parts = path.name.removeprefix(PREFIX).split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def _stop_leftover_server(folder: Path) -> None:
    """Stop a server still running from `folder` (its pid file; the process must name the folder)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((folder / SERVER_PID).read_text().strip())
        if str(folder) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            os.killpg(pid, signal.SIGKILL)


def sweep_stale(roots: list[Path] | None = None) -> list[Path]:
    """Remove this user's vLLM directories whose owner process is gone; returns what was removed."""
    removed = []
    for root in roots if roots is not None else [SHM, Path(tempfile.gettempdir())]:
        if not root.is_dir():
            continue
        for path in root.glob(f"{PREFIX}*"):
            pid = owner_pid(path)
            with contextlib.suppress(OSError):
                if pid is None or _pid_alive(pid) or path.stat().st_uid != os.getuid() or not path.is_dir():
                    continue
                _stop_leftover_server(path)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def make_workdir(kind: str, need: int, run_dir: str | Path | None = None, shm: Path = SHM) -> Path:
    """A private directory for `need` bytes of model files (see the module docstring); sweeps stale ones
    first. /dev/shm is used only when its free space holds `need` twice (with a margin): Docker gives
    containers 64 MB there by default."""
    sweep_stale([shm, Path(tempfile.gettempdir())] + ([Path(run_dir)] if run_dir else []))
    prefix = f"{PREFIX}{kind}-{os.getpid()}-"
    if shm.is_dir():
        with contextlib.suppress(OSError):
            if shutil.disk_usage(shm).free >= 2 * need * MARGIN:
                return Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
    parent = Path(run_dir) if run_dir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
