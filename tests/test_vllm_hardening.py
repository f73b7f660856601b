"""vLLM server hardening that needs no vLLM: the server process dies with its trainer, stale files of
dead trainers are swept (their leftover server stopped), and a small /dev/shm sends the model files to
the run directory. (The key guarding every path is checked against a real server in
test_vllm_server.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trimpi.generation.vllm_files import SERVER_PID, make_workdir, owner_pid, sweep_stale

SRC = str(Path(__file__).resolve().parents[1] / "src")


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie of ours counts as gone
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_server_dies_with_its_trainer(tmp_path):
    """A 'trainer' starts a 'server' the way VLLMServerEngine does (own session, tied to its parent), then
    is SIGKILLed: the server gets SIGTERM from the kernel and exits."""
    server_code = ("import os, time; from trimpi.generation.vllm_guarded import tie_to_parent; "
                   f"tie_to_parent(int(os.environ['TRIMPI_PARENT_PID'])); open({str(tmp_path / 'up')!r}, 'w').close(); "
                   "time.sleep(120)")
    trainer_code = ("import os, subprocess, sys, time; "
                    "p = subprocess.Popen([sys.executable, '-c', sys.argv[1]], start_new_session=True, "
                    "env={**os.environ, 'TRIMPI_PARENT_PID': str(os.getpid())}); print(p.pid, flush=True); "
                    "time.sleep(120)")
    env = {**os.environ, "PYTHONPATH": SRC}
    trainer = subprocess.Popen([sys.executable, "-c", trainer_code, server_code], env=env, stdout=subprocess.PIPE,
                               text=True)
    server = int(trainer.stdout.readline())
    deadline = time.monotonic() + 30
    while not (tmp_path / "up").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "up").exists()
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    assert wait_gone(server), "the server outlived its SIGKILLed trainer"


def test_stale_files_of_dead_trainers_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f"trimpi-vllm-server-{dead}-abcd"
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "model.safetensors").write_bytes(b"\0" * 1024)
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(stale)],
                                start_new_session=True)  # a server still running from it
    (stale / SERVER_PID).write_text(f"{leftover.pid}\n")
    cmdline = Path(f"/proc/{leftover.pid}/cmdline")
    deadline = time.monotonic() + 20
    while str(stale) not in cmdline.read_bytes().decode() and time.monotonic() < deadline:
        time.sleep(0.05)  # until the child has exec'd (its command line names the folder)
    mine = tmp_path / f"trimpi-vllm-engine-{os.getpid()}-efgh"
    mine.mkdir()
    other = tmp_path / "trimpi-vllm-1a2b3c"  # an older name without an owner: left alone
    other.mkdir()
    assert owner_pid(stale) == int(dead) and owner_pid(other) is None
    assert sweep_stale([tmp_path]) == [stale]
    assert not stale.exists() and mine.exists() and other.exists()
    leftover.wait(timeout=10)
    assert leftover.returncode == -signal.SIGKILL


def test_small_dev_shm_sends_model_files_to_the_run_directory(tmp_path, monkeypatch):
    import shutil

    shm = tmp_path / "shm"
    shm.mkdir()
    real = shutil.disk_usage

    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=64 << 20) if Path(p) == shm else real(p))
    big = make_workdir("server", need=100 << 20, run_dir=tmp_path / "run", shm=shm)  # 100 MB: Docker's 64 MB is short
    small = make_workdir("server", need=1 << 20, run_dir=tmp_path / "run", shm=shm)
    assert big.parent == tmp_path / "run" and small.parent == shm
    assert owner_pid(big) == os.getpid() and big.name.startswith("trimpi-vllm-server-")


@pytest.mark.parametrize("missing", ["VLLM_API_KEY"])
def test_guarded_server_refuses_to_start_without_a_key(missing):
    env = {k: v for k, v in os.environ.items() if k != missing}
    proc = subprocess.run([sys.executable, "-m", "trimpi.generation.vllm_guarded", "--model", "x"],
                          env={**env, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "VLLM_API_KEY is not set" in proc.stderr
