"""`trimpi repro CONFIG.yaml`: the Table-2-style comparison over settings and seeds, with a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def repro(
    config: Annotated[Path, typer.Argument(help="Repro config YAML (see configs/micro_repro.yaml).")],
    out: Annotated[Path | None, typer.Option(help="Output directory (default: runs/<name>).")] = None,
    jobs: Annotated[int, typer.Option(help="Seeds run in parallel, each with cores/jobs threads.")] = 1,
    seed: Annotated[int | None, typer.Option(help="Run only this seed (no table).")] = None,
    base_only: Annotated[bool, typer.Option("--base-only", help="Build (or finish) the policy-following bases only.")]
    = False,
    table_only: Annotated[bool, typer.Option("--table-only", help="Only rebuild the table from finished runs.")]
    = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Datasets, a policy-following base per seed, every setting's methods, then mean ± std over seeds."""
    from trimpi.errors import ConfigError
    from trimpi.pipeline import repro as rp

    from trimpi.data.io import claim_output, mark_owned

    cfg = rp.load_repro(config)
    target = out or Path("runs") / cfg.name
    if jobs < 1:
        raise ConfigError(f"--jobs: must be >= 1, got {jobs}")
    if seed is not None and seed not in cfg.seeds:
        raise ConfigError(f"--seed: {seed} is not one of the config's seeds {cfg.seeds}")
    claim_output(target)
    target.mkdir(parents=True, exist_ok=True)
    mark_owned(target, "repro")
    if base_only:
        for s in [seed] if seed is not None else cfg.seeds:
            record = rp.run_base(cfg, target, s, progress, typer.echo)
            accuracy = {name: p["in_context"]["score"] for name, p in record["result"]["settings"].items()}
            typer.echo(f"seed {s}: base evaluated in {record['id']}: in-context accuracy {accuracy}")
        return
    from trimpi.report import write_report

    if table_only:  # reads finished runs only; its files are written atomically, so no lock is needed
        write_table(cfg, target, None)
        return
    if seed is not None:
        rp.run_seed(cfg, target, seed, progress, typer.echo, after=write_report)
        return
    rp.run_repro(cfg, config, target, jobs=jobs, progress=progress, echo=typer.echo, after_run=write_report,
                 after=lambda out, seconds: write_table(cfg, out, seconds))


def write_table(cfg, out: Path, seconds: float | None) -> None:
    """repro.json / repro.md / repro.png from the finished runs under `out`; print the table."""
    from trimpi.report.repro import aggregate, table_markdown, write_outputs

    table = aggregate(cfg, out)
    if seconds is not None:
        table["wall_seconds"] = round(seconds, 1)
    write_outputs(table, out)
    typer.echo(table_markdown(table))
    typer.echo(f"table: {out / 'repro.md'}")
