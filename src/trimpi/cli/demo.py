"""`trimpi demo`: the main job on the embedded default, sized for a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    out: Annotated[Path, typer.Option(help="Directory for the demo's data and outputs.")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Build a small ClevrPolicy-T dataset (depth 2) and write its preview image."""
    from trimpi.data.clevr.build import ClevrConfig, build_clevr
    from trimpi.data.preview import write_preview

    cfg = ClevrConfig.checked(
        depths=[2], variant="T", policies=4, train_per_policy=100, test=100, cot=100, general=50,
        width=160, height=120, seed=seed, workers=2,
    )
    data = out / "clevrpolicy"
    build_clevr(cfg, data, overwrite=True)
    path = write_preview(data, out / "preview.png", split="test", n=12, seed=seed)
    typer.echo(f"dataset: {data}\npreview: {path}")
