"""`trimpi data import`: your own policy documents and examples → a trimpi dataset directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trimpi.cli.safety import TrustCode


def data_import(
    out: Annotated[Path, typer.Option(help="Output dataset directory.")],
    policy: Annotated[list[str], typer.Option(
        help="Policy document (Markdown, text or policy JSON), as FILE or NAME=FILE; repeat for several.")],
    examples: Annotated[list[Path], typer.Option(
        help="Examples: .jsonl, .json, .csv, .tsv, .parquet or a `datasets` save_to_disk directory; repeatable.")],
    override_policy: Annotated[list[str], typer.Option(
        help="Updated policy NAME=FILE for override_test rows (same name as the policy it replaces).")] = [],  # noqa: B006
    column: Annotated[list[str], typer.Option(
        help="Read a record field from another column: FIELD=COLUMN, e.g. query=question; repeatable.")] = [],  # noqa: B006
    answer_type: Annotated[str | None, typer.Option(
        help="How answers are scored: exact, choice, numeric, tool_call, judge, module:function, or a JSON "
             "object with options, e.g. '{\"type\": \"choice\", \"options\": [...]}' (an answer_type column "
             "wins per row).")] = None,
    task: Annotated[str, typer.Option(help="The records' task name (a task column wins per row).")] = "custom",
    name: Annotated[str | None, typer.Option(help="Dataset name in the manifest (default: directory name).")] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of rows without a split that go to test.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
    images: Annotated[str, typer.Option(help="copy the image files, or link them (symlinks to the sources).")] = "copy",
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: ',' ; tab for .tsv).")] = None,
    workers: Annotated[int, typer.Option(help="Threads that verify images.")] = 2,
    media_root: Annotated[Path | None, typer.Option(
        help="Folder that image and scene paths resolve in (default: each examples file's folder); paths may not "
             "lead out of it.")] = None,
    trust_code: TrustCode = [],  # noqa: B006
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory (one trimpi wrote).")] = False,
) -> None:
    """Import a policy (or several) and its examples as a dataset that train, eval and run use unchanged."""
    from trimpi.cli.safety import local_inputs
    from trimpi.data.imports import ImportOptions, import_dataset
    from trimpi.data.imports.formats import parse_mapping
    from trimpi.data.io import claim_output
    from trimpi.trust import trust_code as trust

    trust(trust_code)
    files = [p.partition("=")[2] or p for p in [*policy, *override_policy]]
    claim_output(out, overwrite, local_inputs(examples=examples, policy=files, media_root=media_root))
    opts = ImportOptions(examples=examples, policies=policy, override_policies=override_policy,
                         columns=parse_mapping(column), answer_type=answer_type, task=task, name=name,
                         test_fraction=test_fraction, seed=seed, images=images, delimiter=delimiter, workers=workers,
                         media_root=media_root)
    from trimpi.pipeline.starter import write_starter

    manifest = import_dataset(opts, out, overwrite=overwrite)
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
    typer.echo(f"wrote {out}: {counts}; {manifest['images']} images; policies {', '.join(manifest['policies'])}")
    fmt = manifest["answer_format"]
    typer.echo(f"answers: the model is trained to write {fmt['written']}; scoring reads {fmt['read']}")
    for warning in manifest["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    recipe = write_starter(out, manifest)
    typer.echo(f"wrote {recipe} (methods, protocols and sizes for this dataset; edit it to change them)")
    typer.echo(f"next: trimpi run {recipe}")
