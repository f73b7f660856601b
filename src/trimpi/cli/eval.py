"""`trimpi eval`: run the evaluation protocols of SPEC §6 on a checkpoint and a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trimpi.cli import vllm_options
from trimpi.cli.safety import ApiKeyEnv, TrustCode


def default_out(model: str) -> Path:
    """eval/<last part of the model name>."""
    name = Path(str(model).rstrip("/")).name or "model"
    return Path("eval") / name


def evaluate(
    model: Annotated[str, typer.Option(help="Checkpoint directory, cached Hugging Face id or preset.")],
    data: Annotated[Path, typer.Option(help="Dataset directory (test.jsonl, ...) or a directory of them.")],
    protocols: Annotated[str, typer.Option(help="Comma-separated: accuracy, in_context, override, "
                                                "policy_in_context, referral, forgetting, efficiency, or all (all: "
                                                "those that apply to each dataset).")]
    = "accuracy",
    out: Annotated[Path | None, typer.Option(help="Output directory (default: eval/<model name>).")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Maximum generated tokens per answer.")] = 512,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N records of each file.")] = None,
    placement: Annotated[str, typer.Option(help="Where the policy goes when in context: system or user.")]
    = "system",
    scorer: Annotated[str, typer.Option(help="GTA text scorer: default, bertscore or lexical.")] = "default",
    judge: Annotated[str | None, typer.Option(help="LLM judge for referral on non-ClevrPolicy data: an "
                                                   "OpenAI-compatible URL or a local model.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Model name served at the --judge URL.")] = None,
    api_key_env: ApiKeyEnv = None,
    trust_code: TrustCode = [],  # noqa: B006
    judge_samples: Annotated[int, typer.Option(help="Responses rated by the judge.")] = 100,
    baseline_model: Annotated[str | None, typer.Option(help="Model before internalization, for forgetting.")]
    = None,
    baseline_scores: Annotated[Path | None, typer.Option(help="scores.json of an earlier run, for forgetting.")]
    = None,
    efficiency_samples: Annotated[int, typer.Option(help="Records whose prefill time is measured.")] = 8,
    efficiency_repeats: Annotated[int, typer.Option(help="Forward passes per prefill timing (median).")] = 3,
    dtype: Annotated[str | None, typer.Option(help="float32 / bfloat16 (default: fp32 on CPU).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed for presets built on the fly.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    engine: Annotated[str, typer.Option(help="Generation engine: hf (transformers generate) or vllm.")] = "hf",
    vllm_max_model_len: vllm_options.MaxModelLen = None,
    vllm_enforce_eager: vllm_options.EnforceEager = None,
) -> None:
    """Evaluate a model: writes predictions_<protocol>.jsonl and scores.json, prints a summary."""
    from trimpi.cli.safety import local_inputs, main_process
    from trimpi.data.io import owned_output
    from trimpi.eval.protocols import asks_for_all, parse_protocols
    from trimpi.eval.runner import EvalOptions, run_eval
    from trimpi.trust import trust_code as trust

    trust(trust_code)

    opts = EvalOptions(
        protocols=parse_protocols(protocols), batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit,
        placement=placement, scorer=scorer, judge_samples=judge_samples, efficiency_samples=efficiency_samples,
        efficiency_repeats=efficiency_repeats, baseline_scores=baseline_scores,
        skip_inapplicable=asks_for_all(protocols), progress=progress, engine=engine,
        vllm_max_model_len=vllm_max_model_len, vllm_enforce_eager=vllm_enforce_eager,
    )
    out = out or default_out(model)
    if engine == "vllm":
        from trimpi.generation.vllm_engine import import_vllm

        import_vllm()  # a missing vLLM fails now, in one line, not after the model is loaded
    inputs = local_inputs(model=model, data=data, baseline_model=baseline_model, baseline_scores=baseline_scores)
    with owned_output(out, "eval", inputs=inputs, lock=main_process()):
        results = run_eval(model, data, out, opts, judge=judge, judge_model=judge_model, baseline_model=baseline_model,
                           dtype=dtype, device=device, seed=seed, judge_api_key_env=api_key_env)
    for dataset, scores in results.items():
        for name, summary in scores["protocols"].items():
            line = f"skipped: {summary['skipped']}" if "skipped" in summary else summary_line(summary)
            typer.echo(f"{dataset:>16} {name:<18} {line}")
    typer.echo(f"results: {out / 'scores.json'}")


def summary_line(summary: dict) -> str:
    """The headline numbers of one protocol's summary."""
    keys = ("accuracy", "tool", "argument", "overall", "exact", "partial", "mean", "baseline_accuracy", "delta",
            "tokens_with_policy", "tokens_without_policy", "token_savings_pct", "prefill_savings_pct")
    parts = [f"n={summary.get('n', 0)}"]
    for key in keys:
        value = summary.get(key)
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
    if len(parts) == 1 and "score" in summary:
        parts.append(f"score={summary['score']:.4g}")
    return " ".join(parts)
