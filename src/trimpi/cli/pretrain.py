"""`trimpi pretrain micro-base|export`: pretrain the shipped micro base (in resumable chunks) and export it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Pretrain the micro base shipped with trimpi, and export it.", no_args_is_help=True,
                  rich_markup_mode=None)

Out = Annotated[Path, typer.Option(help="Run directory (corpus shards + checkpoint); rerun to continue.")]


def parse_stage_steps(values: list[str] | None) -> dict[str, int]:
    """--steps vision=2000 --steps follow=1200 → {"vision": 2000, "follow": 1200} (one-line errors)."""
    out = {}
    for value in values or []:
        name, _, count = value.partition("=")
        if not name or not count.strip().isdigit():
            raise typer.BadParameter(f"--steps {value!r}: expected STAGE=N, e.g. vision=2000")
        out[name.strip()] = int(count)
    return out


@app.command("micro-base")
def micro_base(
    out: Out,
    hours: Annotated[float | None, typer.Option(help="Stop this chunk after H hours (checkpointed); rerun to go "
                                                     "on.")] = None,
    steps: Annotated[list[str] | None, typer.Option(help="STAGE=N: a stage's optimizer steps (repeatable; stages: "
                                                         "vision, ground, follow, joint).")] = None,
    seed: Annotated[int, typer.Option(help="Corpus, tokenizer and initialisation seed.")] = 0,
    exclude: Annotated[list[Path] | None, typer.Option(help="Dataset directory whose scenes and policy trees the "
                                                            "corpus must not contain (repeatable).")] = None,
    family: Annotated[str, typer.Option(help="idefics3 (SigLIP eye; the shipped base) or fast_vlm (ConvNeXt eye; "
                                             "HF engine only).")] = "idefics3",
    image_size: Annotated[int, typer.Option(help="idefics3: the eye's (square) input edge in pixels.")] = 112,
    eye_width: Annotated[int, typer.Option(help="fast_vlm: eye input width in pixels (a multiple of 32).")] = 160,
    eye_height: Annotated[int, typer.Option(help="fast_vlm: eye input height in pixels (a multiple of 32).")] = 128,
    hidden: Annotated[int, typer.Option(help="Text width.")] = 256,
    layers: Annotated[int, typer.Option(help="Text depth.")] = 4,
    heads: Annotated[int, typer.Option(help="Text attention heads.")] = 8,
    force: Annotated[bool, typer.Option(help="Go on past a missed stage gate (the model card records it).")] = False,
    dtype: Annotated[str, typer.Option(help="auto (bf16 autocast on AMX/AVX512-BF16 CPUs and bf16 GPUs), float32 "
                                            "or bfloat16.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    data_workers: Annotated[int, typer.Option(help="Processes writing corpus shards ahead.")] = 1,
    save_minutes: Annotated[float, typer.Option(help="Checkpoint at least this often.")] = 10.0,
    stop_after: Annotated[int | None, typer.Option(help="Stop after N steps in this run (smoke runs).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Pretrain (or continue pretraining) the micro base in OUT, stage by stage."""
    from trimpi.train.pretrain import STAGES, Architecture, PretrainOptions, run_pretrain, with_stage_steps

    arch = Architecture(family=family, image_size=image_size, eye_width=eye_width, eye_height=eye_height,
                        hidden=hidden, layers=layers, heads=heads, kv_heads=heads)
    opts = PretrainOptions(out=str(out), arch=arch, stages=with_stage_steps(STAGES, parse_stage_steps(steps)),
                           seed=seed, exclude=tuple(str(p) for p in exclude or ()), hours=hours, force=force,
                           dtype=dtype, device=device, data_workers=data_workers, save_minutes=save_minutes,
                           stop_after=stop_after, progress=progress)
    result = run_pretrain(opts)
    print(json.dumps(result, indent=2, default=str))
    if result["stopped"]:
        print(result["stopped"])
        if "MISSED" in result["stopped"]:
            raise typer.Exit(1)


@app.command("corpus")
def corpus(
    out: Out,
    shards: Annotated[int, typer.Option(help="Shards to write per stage (512 items each).")],
    workers: Annotated[int, typer.Option(help="Processes.")] = 2,
    seed: Annotated[int, typer.Option(help="The run's seed.")] = 0,
    exclude: Annotated[list[Path] | None, typer.Option(help="As for micro-base (must match the run).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Write a run's first corpus shards of every stage in parallel (the files the run would write itself)."""
    from trimpi.train.pretrain import PretrainOptions, prepare_corpus

    opts = PretrainOptions(out=str(out), seed=seed, exclude=tuple(str(p) for p in exclude or ()))
    print(f"{out}: {prepare_corpus(opts, shards, workers, progress)} shards written")


@app.command("pack")
def pack(
    run: Annotated[Path, typer.Option(help="Run directory of `trimpi pretrain micro-base`.")],
    to: Annotated[Path, typer.Option(help="Directory to write (a run directory to carry to another machine).")],
) -> None:
    """Copy the run's finished stages, weights only, into TO: a run that `micro-base --out` continues."""
    from trimpi.train.pretrain import pack_finished

    print(f"{to}: stages {', '.join(pack_finished(run, to))} (weights only)")


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
    if if_finished and not done["finished"]:
        todo = next(s for s in done["stages"] if not s["done"])
        print(f"{run}: stage {todo['stage']} at step {todo['step']} of {todo['steps']}; rerun the pretraining to "
              "continue, then export")
        return

    manifest = export_run(run, to, read_json(measured) if measured else None, allow_unfinished)
    print(f"{to}: {manifest['size_mb']} MB, sha256 {manifest['sha256']}")
