"""`vllm serve` as trimpi starts it: every path needs the run's API key, and it dies with its trainer.

    python -m trimpi.generation.vllm_guarded [vllm serve arguments]   (VLLM_API_KEY, TRIMPI_PARENT_PID set)

vLLM's own key guards only /v1, /v2, ... paths; its development endpoints (/collective_rpc, which
reloads weights from any path, /reset_prefix_cache, ...) stay open to every local user. Here the
key guards every path. The process asks the kernel for SIGTERM when its parent (the trainer) dies,
so a SIGKILLed or OOM-killed trainer does not leave the server holding the GPU, the port and the model.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def tie_to_parent(parent: int | None = None) -> None:
    """Get SIGTERM when the parent process dies (Linux); exit now if it is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the trainer's close() and the next start's sweep remain
    if parent is not None and os.getppid() != parent:  # died between fork and prctl
        sys.exit(1)


def guard_every_path() -> None:
    """Require the API key on every path, /health and the development endpoints included."""
    from vllm.entrypoints.serve.middleware import authenticate

    authenticate.GUARDED_PREFIX = ("/",)


def main() -> None:
    if not os.environ.get("VLLM_API_KEY"):
        sys.exit("vllm_guarded: VLLM_API_KEY is not set")
    parent = os.environ.get("TRIMPI_PARENT_PID")
    tie_to_parent(int(parent) if parent and parent.isdigit() else None)
    guard_every_path()
    from vllm.entrypoints.launchers.api_server.entry import main as serve

    serve()


if __name__ == "__main__":
    main()
