"""Command-line options of the trust rule (`trimpi.trust`), shared by every command that takes them:
`--trust-code MODULE:FUNCTION` (run this function of yours), `--api-key-env VAR` (send the key held by VAR
to this endpoint), and the inputs a command's `--out` must not hold."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

TrustCode = Annotated[list[str], typer.Option(
    "--trust-code", metavar="MODULE:FUNCTION",
    help="Allow this Python function (an answer type or reward named here, in a recipe or in the data) to be "
         "imported and run; repeat for several. Without it no code named by data, recipes or options runs.")]
ApiKeyEnv = Annotated[str | None, typer.Option(
    "--api-key-env", metavar="VAR",
    help="Environment variable holding the endpoint's API key; it is sent only over https:// or to a loopback "
         "host. Without it no key is sent.")]


def local_inputs(**named: Any) -> dict[str, Any]:
    """{--flag: path} for the given inputs that name local files or folders (a preset or hub id does not)."""
    flags = {}
    for name, value in named.items():
        values = value if isinstance(value, list | tuple) else [value]
        paths = [Path(str(v)) for v in values if v is not None and Path(str(v)).exists()]
        if paths:
            flags["--" + name.replace("_", "-")] = paths
    return flags


def main_process() -> bool:
    """Whether this is the first process of a (possibly distributed) job: the one that holds --out's lock."""
    return os.environ.get("RANK", "0") == "0"
