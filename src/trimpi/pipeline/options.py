"""Options resolved once, in the plan: a step's config holds every option its library call takes.

A step's hash covers its config. Were the config only the keys a recipe happens to set, a
changed library default (a dataclass field, the SFT defaults table, the RL learning rate by
model size) would leave the hash alone and a finished step would be silently reused. So the
plan writes each option type in full: every dataclass field with its default filled in, and
the defaults that depend on the model's size resolved. The size is known before any weights
exist: presets and tiny models are built here from fixed sizes (`BUILT_PARAMETERS`, checked
against the builders by the tests), any other model is counted from its config.json on the
meta device. Every later stage has the base's size (LoRA is merged into each checkpoint).

The recipe's `judge:` enters the config of eval and RL steps as `judge: {url, model}`, and only when
given: a recipe without one keeps the hashes it always had.

Executors hand the options to the library unchanged; the library resolving them again is a
no-op, since nothing is left unset. Fields that are the step's inputs, outputs or display
(data, model, out, overwrite, progress) are not options and never enter the config.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from trimpi.errors import ConfigError

TINY_PREFIX = "tiny:"
MATERIALIZED = ("micro", "micro-scratch", "smol")  # presets saved once as a checkpoint (their tokenizer depends on the data)
BUILT_PARAMETERS = {"micro": 4_100_000, "micro-scratch": 4_100_000, "smol": 137_000_000, TINY_PREFIX: 400_000}
LARGE_MODEL_PARAMS = 10**9  # above every size threshold: what a dry run assumes when it cannot size a hub model
NOT_OPTIONS = {"data", "model", "out", "overwrite", "progress"}


@functools.lru_cache(maxsize=16)
def model_parameters(name: str) -> int:
    """Parameters of the base model `name`, without loading (or building) its weights."""
    if name in MATERIALIZED:
        return BUILT_PARAMETERS[name]
    if name.startswith(TINY_PREFIX):
        return BUILT_PARAMETERS[TINY_PREFIX]
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from trimpi.errors import ModelError
    from trimpi.models.loading import check_hub_id, offline_mode

    if not Path(name).exists():
        try:
            check_hub_id(name, fetch=True)  # config.json only (a few KB), never weights
        except ModelError as e:
            raise ConfigError(f"model: {e}") from None
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=offline_mode() or Path(name).exists())
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
    except Exception as e:  # noqa: BLE001 - any config problem means the size (and so the defaults) is unknown
        raise ConfigError(f"model: {name}: cannot read its config to size it ({type(e).__name__}: {e})"
                          .splitlines()[0][:300]) from None
    return sum(p.numel() for p in model.parameters())


def _fields(options: Any, drop: set[str]) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in NOT_OPTIONS | drop}


def _in(section: str, fn, *args, **kwargs):
    """Call `fn`; a ConfigError (or a bad keyword) is re-raised naming the recipe section."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as e:
        raise ConfigError(f"{section}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{section}: {e}") from None


def stage_options(section: str, options: dict[str, Any], stage: str, target: str, n_params: int) -> dict[str, Any]:
    """Every StageOptions field of a VM-CPT / SFT step, size defaults resolved (stage, target, seed excluded)."""
    from trimpi.train.sft import StageOptions, resolve

    opts = _in(section, StageOptions, data="", model="", out="", stage=stage, target=target, **options)
    return _fields(_in(section, resolve, opts, n_params), {"stage", "target", "seed"})


def rl_options(section: str, options: dict[str, Any], algo: str, policy_rollout: bool,
               n_params: int) -> dict[str, Any]:
    """Every RLConfig field of an RL step, the algorithm's and the size's defaults resolved."""
    from trimpi.train.rl.config import RLConfig, default_learning_rate

    values = {"learning_rate": default_learning_rate(n_params), **options}
    cfg = _in(section, RLConfig, algo=algo, policy_rollout=policy_rollout, **values)
    return _fields(_in(section, cfg.resolved), {"algo", "policy_rollout", "seed"})


def warmup_options(section: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every WarmupOptions field of a perception warm-up step (seed excluded)."""
    from trimpi.train.warmup import WarmupOptions

    return _fields(_in(section, WarmupOptions, data="", out="", **options), {"seed"})


def eval_options(section: str, options: dict[str, Any], protocols: list[str],
                 keys: dict[str, str] | None = None) -> dict[str, Any]:
    """Every EvalOptions field of an eval step, checked (protocols kept apart; baseline paths are inputs).
    An error names the recipe key: `section.field`, or `keys[field]` where the recipe spells it otherwise."""
    from trimpi.eval.runner import EvalOptions

    opts = _in(section, EvalOptions, protocols=list(protocols), **options)
    opts.check(name=lambda f: (keys or {}).get(f, f"{section}.{f}"))
    return _fields(opts, {"protocols", "baseline_scores", "skip_inapplicable"})


def gta_options(options: dict[str, Any], seed: int) -> dict[str, Any]:
    """The GTAPolicy build's arguments, defaults from `build_gta` itself."""
    import inspect

    from trimpi.data.gta.build import build_gta

    params = inspect.signature(build_gta).parameters
    defaults = {k: params[k].default for k in ("gta_dir", "profiles_per_step")}
    out = {**defaults, "seed": seed, **options}
    return {**out, "gta_dir": str(Path(out["gta_dir"]).resolve()) if out["gta_dir"] else None}


def judge_options(judge: Any) -> dict[str, str | None] | None:
    """The recipe's judge (a `recipe.JudgeSpec` or None) as eval and RL step configs hold it."""
    if judge is None:
        return None
    key = {"api_key_env": judge.api_key_env} if judge.api_key_env else {}  # absent when unset: hashes unchanged
    return {"url": judge.url, "model": judge.model, **key}


def judge_key_env(judge: dict[str, str | None] | None) -> str | None:
    """The environment variable holding a step's judge endpoint key, or None (no key is sent)."""
    return (judge or {}).get("api_key_env")


def judge_args(judge: dict[str, str | None] | None) -> tuple[str | None, str | None]:
    """A step's judge as `trimpi eval --judge SPEC --judge-model NAME` takes it: (url, served model) for an
    endpoint, (local model, None) otherwise; (None, None) without a judge."""
    if judge is None:
        return None, None
    return (judge["url"], judge["model"]) if judge["url"] else (judge["model"], None)
