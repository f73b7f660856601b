"""`trimpi data cot`: reasoning traces from a teacher (local model or OpenAI-compatible URL), or template traces
that cite the policy's own rules (`--template`: offline, seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trimpi.cli.safety import ApiKeyEnv, TrustCode


def cot(
    data: Annotated[Path, typer.Option(help="Dataset directory holding the split's JSONL and its policies.")],
    teacher: Annotated[str | None, typer.Option(help="An OpenAI-compatible base URL (http://host:port/v1), a local "
                                                     "checkpoint, a cached Hugging Face id or a preset.")] = None,
    template: Annotated[bool, typer.Option("--template", help="No teacher: a rule-citing trace per record, built "
                                                              "from the policy's numbered rules / headings and the "
                                                              "gold answer (offline, seconds); written to "
                                                              "DATA/train_cot.jsonl and labelled in the manifest.")]
    = False,
    mode: Annotated[str, typer.Option(help="forward: keep traces with a correct answer; reverse: the teacher "
                                           "is given the gold answer and explains it.")] = "forward",
    teacher_model: Annotated[str | None, typer.Option(help="Model name served at the --teacher URL.")] = None,
    api_key_env: ApiKeyEnv = None,
    trust_code: TrustCode = [],  # noqa: B006
    split: Annotated[str, typer.Option(help="Which JSONL file of the dataset to annotate.")] = "train",
    out: Annotated[Path | None, typer.Option(help="Output JSONL (default: DATA/train_cot_teacher.jsonl).")] = None,
    limit: Annotated[int | None, typer.Option(help="Annotate only the first N records.")] = None,
    samples_per_example: Annotated[int, typer.Option(help="Attempts per record until a trace is accepted "
                                                                     "(a reply repeated word for word ends them).")] = 4,
    batch_size: Annotated[int, typer.Option(help="Records per teacher call (local models batch them).")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Maximum generated tokens per trace.")] = 1024,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy; retries then repeat).")]
    = 0.7,
    seed: Annotated[int, typer.Option(help="Sampling seed (local models) and preset seed.")] = 0,
    placement: Annotated[str, typer.Option(help="Where the policy goes: system or user turn.")] = "system",
    min_score: Annotated[float, typer.Option(help="GTAPolicy: minimum tool-call overall score to keep a trace.")]
    = 1.0,
    scorer: Annotated[str, typer.Option(help="GTAPolicy text scorer of the answer check: default (MiniLM "
                                             "BERTScore when installed, else lexical F1), bertscore or lexical. "
                                             "The default is RL's and `trimpi eval`'s, so a kept trace's answer "
                                             "is one they score correct.")] = "default",
    concurrency: Annotated[int, typer.Option(help="Parallel requests to an endpoint teacher.")] = 1,
    dtype: Annotated[str | None, typer.Option(help="Local teacher dtype: float32 / bfloat16.")] = None,
    device: Annotated[str | None, typer.Option(help="Local teacher device: cpu, cuda, cuda:1 ...")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start again instead of resuming an earlier run.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Write reasoning traces by a teacher with the policy in context, keeping accepted ones; or template traces."""
    if template:
        from trimpi.data.teacher_template import summary_line as template_line
        from trimpi.data.teacher_template import template_traces

        if teacher is not None:
            raise typer.BadParameter("give --teacher or --template, not both")
        typer.echo(template_line(template_traces(data, out, split, overwrite)))
        return
    if teacher is None:
        raise typer.BadParameter("give --teacher URL|MODEL (an LLM writes traces) or --template (rule-citing "
                                 "traces from the policy, offline)")
    from trimpi.data.teacher import TeacherOptions, default_out, generate_traces, split_path, summary_line, summary_path
    from trimpi.generation.client import is_url, make_client
    from trimpi.trust import trust_code as trust

    trust(trust_code)
    opts = TeacherOptions(
        mode=mode, split=split, limit=limit, samples_per_example=samples_per_example, batch_size=batch_size,
        max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, placement=placement, min_score=min_score,
        scorer=scorer, concurrency=concurrency, overwrite=overwrite, progress=progress,
    ).check()
    split_path(data, split)  # a missing dataset fails before a model is loaded
    if is_url(teacher):
        client = make_client(teacher, model=teacher_model, api_key_env=api_key_env)
    else:
        client = make_client(teacher, batch_size=batch_size, dtype=dtype, device=device, data=data, seed=seed)
        client.progress = False
    out = out or default_out(data)
    summary = generate_traces(client, data, out, opts, echo=lambda line: typer.echo(line, err=True))
    typer.echo(summary_line(summary))
    typer.echo(f"wrote {out} and {summary_path(out)}")
    if out.name != "train_cot.jsonl":
        typer.echo(f"recipes read train_cot.jsonl; to train on these, give `split: {out.stem}` under stages.sft and "
                   "stages.cpt of the recipe")
