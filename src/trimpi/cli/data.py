"""`trimpi data clevr|gta|preview`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trimpi.cli.cot import cot
from trimpi.cli.data_import import data_import
from trimpi.errors import ConfigError

app = typer.Typer(help="Build and inspect policy datasets.", no_args_is_help=True, rich_markup_mode=None)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size: expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    if w < 16 or h < 16:
        raise ConfigError(f"--image-size: width and height must be at least 16, got {text!r}")
    return w, h


CLEVR_FLAGS = {"depths": "--depth", "width": "--image-size", "height": "--image-size"}


def clevr_flag(field: str) -> str:
    """The `trimpi data clevr` flag that sets a ClevrConfig field."""
    return CLEVR_FLAGS.get(field, "--" + field.replace("_", "-"))


@app.command("clevr")
def clevr(
    out: Annotated[Path, typer.Option(help="Output directory (one sub-directory per setting).")],
    depth: Annotated[list[int], typer.Option(help="Tree depth N (2, 4 or 6); repeat for several.")] = [2],  # noqa: B006
    variant: Annotated[str, typer.Option(help="T (text-only policies) or M (with image crops).")] = "T",
    policies: Annotated[int, typer.Option(help="Policies per depth.")] = 10,
    train_per_policy: Annotated[int, typer.Option(help="Training QA pairs per policy.")] = 2000,
    test: Annotated[int, typer.Option(help="Test instances per setting (on unseen images).")] = 2000,
    cot: Annotated[int | None, typer.Option(
        help="Reasoning (CoT) training examples per setting [default: 2500, or every training record if fewer].",
        show_default=False)] = None,
    trace: Annotated[str, typer.Option(
        help="Gold reasoning traces: full (object list and witnesses) or compact (conditions only).")] = "full",
    general: Annotated[int | None, typer.Option(
        help="General scene questions, one per test image (forgetting probe) [default: 500, or --test if fewer].",
        show_default=False)] = None,
    image_size: Annotated[str, typer.Option(help="Rendered image size WIDTHxHEIGHT.")] = "320x240",
    renderer: Annotated[str, typer.Option(help="numpy (fast, built in) or blender (bpy, CLEVR-like).")] = "numpy",
    blender_python: Annotated[
        str | None, typer.Option(help="Python interpreter with bpy installed (renderer=blender).")
    ] = None,
    clevr_dir: Annotated[
        Path | None, typer.Option(help="A CLEVR v1.0 release to use instead of rendering.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    workers: Annotated[int, typer.Option(help="Rendering processes.")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
) -> None:
    """Generate ClevrPolicy: scenes, images, decision-tree policies and QA records."""
    from trimpi.cli.safety import local_inputs
    from trimpi.data.clevr.build import ClevrConfig, build_clevr
    from trimpi.data.io import claim_output

    claim_output(out, overwrite, local_inputs(clevr_dir=clevr_dir))
    width, height = _parse_size(image_size)
    cfg = ClevrConfig.checked(
        name=clevr_flag,
        depths=depth,
        variant=variant,
        policies=policies,
        train_per_policy=train_per_policy,
        test=test,
        cot=cot,
        trace=trace,
        general=general,
        width=width,
        height=height,
        renderer=renderer,
        blender_python=blender_python,
        clevr_dir=str(clevr_dir) if clevr_dir else None,
        seed=seed,
        workers=workers,
    )
    build_clevr(cfg, out, overwrite=overwrite)


@app.command("gta")
def gta(
    out: Annotated[Path, typer.Option(help="Output directory.")],
    gta_dir: Annotated[
        Path | None, typer.Option(help="A GTA release (dataset.json, toolmeta.json, image/); default: bundled sample.")
    ] = None,
    profiles_per_step: Annotated[int, typer.Option(help="User profiles sampled per reference tool call.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
) -> None:
    """Build GTAPolicy: single-step tool-use instances governed by a versioned-tool policy."""
    from trimpi.cli.safety import local_inputs
    from trimpi.data.gta.build import build_gta
    from trimpi.data.io import claim_output

    claim_output(out, overwrite, local_inputs(gta_dir=gta_dir))
    build_gta(out=out, gta_dir=gta_dir, profiles_per_step=profiles_per_step, seed=seed, overwrite=overwrite)


@app.command("preview")
def preview(
    data: Annotated[Path, typer.Argument(help="A dataset directory (or a ClevrPolicy output with settings).")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("preview.png"),
    split: Annotated[str, typer.Option(help="Which JSONL file to sample.")] = "test",
    n: Annotated[int, typer.Option(help="Number of examples.")] = 12,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a contact sheet of examples with their policy names and answers."""
    from trimpi.data.preview import write_preview

    if n < 1:
        raise ConfigError(f"--n: must be at least 1, got {n}")
    path = write_preview(data, out, split=split, n=n, seed=seed)
    typer.echo(f"wrote {path}")


app.command("cot")(cot)
app.command("import")(data_import)
