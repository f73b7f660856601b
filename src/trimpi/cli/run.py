"""`trimpi run RECIPE.yaml`: data → stages → evaluations → report, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see configs/demo.yaml and configs/paper/).")],
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<recipe name>).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; run nothing.")] = False,
    only: Annotated[list[str] | None, typer.Option(help="Run only this method (repeatable).")] = None,
    model: Annotated[str | None, typer.Option(help="Replace the recipe's base model (e.g. tiny:qwen2_5_vl).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a recipe: every method's steps, sharing finished steps; then write report.md and report.html."""
    from trimpi.pipeline import Context, load_recipe, run_recipe
    from trimpi.report import report_run

    spec = load_recipe(recipe, {"model": model} if model else None)
    target = out or Path("runs") / spec.name
    result = run_recipe(spec, target, dry_run=dry_run, only=only or None, ctx=Context(out=target, progress=progress),
                        echo=typer.echo, after=lambda d: report_run(d, typer.echo))
    if dry_run:
        typer.echo(f"plan: {len(result['steps'])} steps for {len(result['methods'])} methods (nothing run)")
