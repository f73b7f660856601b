"""`trimpi run RECIPE.yaml`: data → stages → evaluations → report, resumable; `trimpi step FILE` (hidden): one
training step of a run, as every process of the accelerate job that `trimpi run` launches for it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see configs/demo.yaml and configs/paper/).")],
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<recipe name>).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan, with each step's "
                                                            "launch command; run nothing.")] = False,
    only: Annotated[list[str] | None, typer.Option(help="Run only this method (repeatable).")] = None,
    model: Annotated[str | None, typer.Option(help="Replace the recipe's base model (e.g. tiny:qwen2_5_vl).")] = None,
    accelerate: Annotated[Path | None, typer.Option(help="Replace the recipe's accelerate config (training steps "
                                                         "run as `accelerate launch` jobs with it).")] = None,
    num_processes: Annotated[int | None, typer.Option(help="Processes per training job (default: the accelerate "
                                                           "config's num_processes).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a recipe: every method's steps, sharing finished steps; then write report.md and report.html."""
    from trimpi.pipeline import Context, load_recipe, run_recipe
    from trimpi.report import report_run

    overrides = {**({"model": model} if model else {}), **({"accelerate": str(accelerate)} if accelerate else {})}
    spec = load_recipe(recipe, overrides or None)
    target = out or Path("runs") / spec.name
    result = run_recipe(spec, target, dry_run=dry_run, only=only or None, ctx=Context(out=target, progress=progress),
                        echo=typer.echo, after=lambda d: report_run(d, typer.echo), num_processes=num_processes)
    if dry_run:
        typer.echo(f"plan: {len(result['steps'])} steps for {len(result['methods'])} methods (nothing run)")


def step(
    file: Annotated[Path, typer.Argument(help="STEP/launch/step.json, written by `trimpi run`.")],
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run one training step of a `trimpi run` (what its `accelerate launch` jobs run)."""
    from trimpi.pipeline.launch import run_step_file

    run_step_file(file, progress=progress)
