"""`trimpi demo`: the main job on the embedded default, sized for a laptop CPU."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer


def demo_recipe() -> Path:
    """The packaged demo recipe (configs/demo.yaml in a source checkout)."""
    return Path(str(files("trimpi") / "recipes" / "demo.yaml"))


def demo(
    out: Annotated[Path, typer.Option(help="Run directory (rerunning skips finished steps).")] = Path("runs/demo"),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run the demo recipe: a small ClevrPolicy-T set, the micro preset, in-context vs CoT SFT vs TriMPI, the report."""
    from trimpi.pipeline import Context, load_recipe, run_recipe
    from trimpi.report import report_run

    run_recipe(load_recipe(demo_recipe()), out, ctx=Context(out=out, progress=progress), echo=typer.echo,
               after=lambda d: report_run(d, typer.echo))
