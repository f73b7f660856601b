"""The `trimpi` command line: trimpi data|train|eval|run|demo ..."""

from __future__ import annotations

import os
import signal
import sys

import typer

from trimpi.cli import data as data_cli
from trimpi.cli import demo as demo_cli
from trimpi.cli import eval as eval_cli
from trimpi.cli import pretrain as pretrain_cli
from trimpi.cli import repro as repro_cli
from trimpi.cli import run as run_cli
from trimpi.cli import train as train_cli
from trimpi.errors import TrimpiError

app = typer.Typer(
    name="trimpi",
    help="Multimodal Policy Internalization: build policy datasets, train VLMs to follow "
    "policies without them in the prompt, and evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
app.add_typer(data_cli.app, name="data")
app.add_typer(train_cli.app, name="train")
app.add_typer(pretrain_cli.app, name="pretrain")
app.command("eval")(eval_cli.evaluate)
app.command("run")(run_cli.run)
app.command("step", hidden=True)(run_cli.step)
app.command("demo")(demo_cli.demo)
app.command("repro")(repro_cli.repro)


INTERRUPTED = 130  # exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it
TERMINATED = 143  # 128 + SIGTERM


class Terminated(SystemExit):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C (staged outputs removed, worker
    pools stopped, locks released)."""


def _terminated(signum, frame) -> None:
    raise Terminated(TERMINATED)


def library_progress_env(argv: list[str]) -> dict[str, str]:
    """Environment that silences Hugging Face's own progress bars (weight loading, downloads) under
    --no-progress; it must be set before transformers is imported."""
    return {"HF_HUB_DISABLE_PROGRESS_BARS": "1"} if "--no-progress" in argv else {}


def offline_env(argv: list[str]) -> dict[str, str]:
    """The hub is the user's to turn off (HF_HUB_OFFLINE), as in every Hugging Face tool; only the
    demo, which needs nothing from it, runs offline by default."""
    if argv[:1] == ["demo"]:
        return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return {}


def main() -> None:
    for key, value in library_progress_env(sys.argv[1:]).items():
        os.environ.setdefault(key, value)
    for key, value in offline_env(sys.argv[1:]).items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = app(standalone_mode=False)
    except TrimpiError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except Terminated:
        code = TERMINATED
    except OSError as e:  # the environment refused (permissions, disk full): one line, not a traceback
        if e.filename is None:
            raise
        print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, (click.ClickException, typer.TyperException)) and hasattr(e, "show"):  # typer vendors click
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, (click.exceptions.Abort, typer.Abort)):
            code = INTERRUPTED
        else:
            raise
    if code in (INTERRUPTED, TERMINATED):
        print("interrupted" if code == INTERRUPTED else "terminated", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
