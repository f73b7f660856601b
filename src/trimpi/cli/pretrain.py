"""`trimpi pretrain micro-base|export`: pretrain the shipped micro base (in resumable chunks) and export it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Pretrain the micro base shipped with trimpi, and export it.", no_args_is_help=True,
                  rich_markup_mode=None)

Out = Annotated[Path, typer.Option(help="Run directory (corpus shards + checkpoint); rerun to continue.")]


@app.command("micro-base")
def micro_base(
    out: Out,
    hours: Annotated[float | None, typer.Option(help="Stop this chunk after H hours (checkpointed); rerun to go "
                                                     "on.")] = None,
    steps: Annotated[int, typer.Option(help="Total optimizer steps of the run.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Items per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (warm-up, then cosine to 10 %).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Corpus, tokenizer and initialisation seed.")] = 0,
    exclude: Annotated[list[Path] | None, typer.Option(help="Dataset directory whose scenes and policy trees the "
                                                            "corpus must not contain (repeatable).")] = None,
    image_size: Annotated[int, typer.Option(help="Model input edge in pixels.")] = 224,
    patch_size: Annotated[int, typer.Option(help="Vision patch size.")] = 14,
    scale_factor: Annotated[int, typer.Option(help="Pixel-shuffle factor.")] = 2,
    hidden: Annotated[int, typer.Option(help="Text width.")] = 256,
    layers: Annotated[int, typer.Option(help="Text depth.")] = 4,
    heads: Annotated[int, typer.Option(help="Text attention heads (head_dim >= 32).")] = 8,
    vision_hidden: Annotated[int, typer.Option(help="Vision width.")] = 192,
    vision_layers: Annotated[int, typer.Option(help="Vision depth.")] = 6,
    vision_heads: Annotated[int, typer.Option(help="Vision attention heads (head_dim >= 32).")] = 6,
    dtype: Annotated[str, typer.Option(help="auto (bf16 autocast on AMX/AVX512-BF16 CPUs and bf16 GPUs), float32 "
                                            "or bfloat16.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    data_workers: Annotated[int, typer.Option(help="Processes writing corpus shards ahead.")] = 1,
    save_minutes: Annotated[float, typer.Option(help="Checkpoint at least this often.")] = 10.0,
    stop_after: Annotated[int | None, typer.Option(help="Stop after N steps in this run (smoke runs).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Pretrain (or continue pretraining) the micro base in OUT."""
    from trimpi.train.pretrain import Architecture, PretrainOptions, run_pretrain

    arch = Architecture(image_size=image_size, patch_size=patch_size, scale_factor=scale_factor, hidden=hidden,
                        layers=layers, heads=heads, kv_heads=heads, vision_hidden=vision_hidden,
                        vision_layers=vision_layers, vision_heads=vision_heads)
    arch.check()
    opts = PretrainOptions(out=str(out), arch=arch, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                           exclude=tuple(str(p) for p in exclude or ()), hours=hours, dtype=dtype, device=device,
                           data_workers=data_workers, save_minutes=save_minutes, stop_after=stop_after,
                           progress=progress)
    print(json.dumps(run_pretrain(opts), indent=2))


@app.command("corpus")
def corpus(
    out: Out,
    shards: Annotated[int, typer.Option(help="Shards to write (512 items each).")],
    workers: Annotated[int, typer.Option(help="Processes.")] = 2,
    seed: Annotated[int, typer.Option(help="The run's seed.")] = 0,
    exclude: Annotated[list[Path] | None, typer.Option(help="As for micro-base (must match the run).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Write a run's first corpus shards in parallel (the same files the run would write itself)."""
    from trimpi.train.pretrain import PretrainOptions, prepare_corpus

    opts = PretrainOptions(out=str(out), seed=seed, exclude=tuple(str(p) for p in exclude or ()))
    print(f"{out}/corpus: {prepare_corpus(opts, shards, workers, progress)} shards written")


@app.command("export")
def export(
    run: Annotated[Path, typer.Option(help="Run directory of `trimpi pretrain micro-base`.")],
    to: Annotated[Path, typer.Option(help="Target directory (src/trimpi/models/base for the shipped base).")],
    measured: Annotated[Path | None, typer.Option(help="JSON file of measured numbers for the model card.")] = None,
    allow_unfinished: Annotated[bool, typer.Option(help="Export a run that has not reached its steps.")] = False,
    if_finished: Annotated[bool, typer.Option(help="Do nothing (exit 0) while the run is unfinished.")] = False,
) -> None:
    """Write the run's weights (bf16 safetensors), processor, base.json and model card into TO."""
    from trimpi.data.io import read_json
    from trimpi.train.pretrain import export_run, run_progress

    done = run_progress(run)
    if if_finished and done["step"] < done["steps"]:
        print(f"{run}: step {done['step']} of {done['steps']}; rerun the pretraining to continue, then export")
        return

    manifest = export_run(run, to, read_json(measured) if measured else None, allow_unfinished)
    print(f"{to}: {manifest['size_mb']} MB, sha256 {manifest['sha256']}")
