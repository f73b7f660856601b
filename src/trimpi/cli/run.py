"""`trimpi run RECIPE.yaml`: data → stages → evaluations → report, resumable; `trimpi step FILE` (hidden): one
training step of a run, as every process of the accelerate job that `trimpi run` launches for it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trimpi.cli.safety import TrustCode


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
    trust_code: TrustCode = [],  # noqa: B006
) -> None:
    """Run a recipe: every method's steps, sharing finished steps; then write report.md and report.html."""
    from trimpi.cli.safety import local_inputs
    from trimpi.data.io import claim_output
    from trimpi.pipeline import Context, load_recipe, run_recipe
    from trimpi.report import report_run
    from trimpi.trust import trust_code as trust

    trust(trust_code)
    overrides = {**({"model": model} if model else {}), **({"accelerate": str(accelerate)} if accelerate else {})}
    spec = load_recipe(recipe, overrides or None)
    target = out or Path("runs") / spec.name
    announce_exposure(spec, typer.echo, check=not dry_run)  # before anything runs
    if not dry_run:
        claim_output(target, inputs=local_inputs(recipe=recipe, data=spec.data.path, accelerate=spec.accelerate))
    result = run_recipe(spec, target, dry_run=dry_run, only=only or None, ctx=Context(out=target, progress=progress),
                        echo=typer.echo, after=lambda d: report_run(d, typer.echo), num_processes=num_processes)
    if dry_run:
        typer.echo(f"plan: {len(result['steps'])} steps for {len(result['methods'])} methods (nothing run)")


def announce_exposure(spec, echo, check: bool) -> None:
    """Say what of the recipe reaches beyond its own files: the Python code its data names (answer types;
    refused unless trusted, when `check`) and the judge endpoint it sends records (and a key) to."""
    from trimpi.generation.client import describe_endpoint
    from trimpi.trust import TRUST_FLAG, require_trusted, trusted_code

    for code, where in named_code(spec):
        state = "trusted" if code in trusted_code() else f"refused unless you pass {TRUST_FLAG} {code}"
        echo(f"custom code: answer type {code} named by {where} ({state})")
        if check:
            require_trusted(code, f"{where}: answer type")
    if spec.judge is not None and spec.judge.url is not None:
        echo(f"judge endpoint: {describe_endpoint(spec.judge.url, spec.judge.api_key_env)} receives the records "
             "and responses it rates")


def named_code(spec) -> list[tuple[str, str]]:
    """(module:function, file) for each custom answer type the recipe's dataset directory names."""
    from trimpi.data.answers import CustomAnswer, parse_answer_type
    from trimpi.data.io import iter_jsonl
    from trimpi.errors import ConfigError

    if spec.data.path is None or not Path(spec.data.path).is_dir():
        return []
    found: dict[str, str] = {}
    for path in sorted(Path(spec.data.path).glob("*.jsonl")):
        for row in iter_jsonl(path):
            try:
                kind = parse_answer_type(row.get("answer_type"), str(row.get("task", "")))
            except ConfigError:
                continue  # malformed types are reported by the run's data checks
            if isinstance(kind, CustomAnswer):
                found.setdefault(kind.spec, str(path))
    return sorted(found.items())


def step(
    file: Annotated[Path, typer.Argument(help="STEP/launch/step.json, written by `trimpi run`.")],
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run one training step of a `trimpi run` (what its `accelerate launch` jobs run)."""
    from trimpi.pipeline.launch import run_step_file

    run_step_file(file, progress=progress)
