"""`trimpi train warmup|cpt|sft|rl`."""

from __future__ import annotations

import typer

from trimpi.cli.rl import rl

app = typer.Typer(help="Training stages: perception warm-up, VM-CPT, SFT and RL.", no_args_is_help=True)
app.command("rl")(rl)
