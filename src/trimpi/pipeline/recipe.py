"""The typed recipe of `trimpi run`: one dataset, one base model, stage options, methods and evaluations.

    name: demo
    seed: 0
    model: micro                 # preset (micro, smol), tiny:<family>, local checkpoint or cached HF id
    data:
      clevr: {depths: [2], variant: T, policies: 4, ...}   # or gta: {...}, or path: DIR
      setting: T-d2              # ClevrPolicy setting to train on (default: the first built)
    warmup: {epochs: 20}         # optional perception warm-up (presets with a random vision tower)
    base: {policies: 24, ...}    # optional policy-following base trained first (trimpi.pipeline.base)
    stages:
      cpt: {epochs: 5, lr: 1.0e-5}
      sft: {epochs: 5, lr: 1.0e-4, lora_rank: 8}
      direct_sft: {...}          # Direct SFT (answer-only target); defaults to the sft options
      grpo: {prompts_per_step: 384, ...}
      dapo: {...}
    methods: [cot_sft, trimpi_grpo]
    eval: {protocols: [accuracy], batch_size: 8, max_new_tokens: 512}
    accelerate: configs/accelerate/zero3.yaml
    engine: vllm                 # optional: RL rollouts and evaluation with vLLM (default hf)
    judge: {url: http://localhost:8000/v1, model: NAME}   # optional LLM judge; or {model: LOCAL-MODEL}

`judge:` names the LLM judge of `trimpi eval --judge URL --judge-model NAME` (an OpenAI-compatible
endpoint and the model it serves) or, with `model` alone, of `--judge MODEL` (a local checkpoint,
cached Hugging Face id or preset). Every method's evaluation uses it (referral on non-ClevrPolicy
data, records of answer type "judge") and so does the RL reward, so both score alike; it enters the
hash of eval and RL steps only. An endpoint gets an API key only from the variable the recipe names,
`judge: {url: https://..., model: NAME, api_key_env: MY_JUDGE_KEY}`, and only over https:// or to a
loopback host; `trimpi run --dry-run` shows where it would go.

Every section forbids unknown keys; stage sections accept the fields of the library's option
types (`StageOptions`, `RLConfig`, `WarmupOptions`, `EvalOptions`) that the pipeline does not
set itself. `load_recipe` turns every problem into a one-line ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from trimpi.errors import ConfigError

# method name -> (label, stage chain). Chain items: cpt, cpt_answer, sft, direct_sft, grpo, dapo, poro_grpo,
# poro_dapo. cpt and sft read reasoning traces (train_cot.jsonl); the other links train on answers alone.
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "in_context": ("In-context", ()),
    "direct_sft": ("Direct SFT", ("direct_sft",)),
    "cot_sft": ("CoT SFT", ("sft",)),
    "cot_sft_grpo": ("CoT SFT + GRPO", ("sft", "grpo")),
    "cot_sft_dapo": ("CoT SFT + DAPO", ("sft", "dapo")),
    "trimpi_grpo": ("TriMPI (PoRo-GRPO)", ("cpt", "sft", "poro_grpo")),
    "trimpi_dapo": ("TriMPI (PoRo-DAPO)", ("cpt", "sft", "poro_dapo")),
    "trimpi_grpo_no_cpt": ("TriMPI-GRPO w/o VM-CPT", ("sft", "poro_grpo")),
    "trimpi_dapo_no_cpt": ("TriMPI-DAPO w/o VM-CPT", ("sft", "poro_dapo")),
    "trimpi_grpo_no_poro": ("TriMPI-GRPO w/o PoRo", ("cpt", "sft", "grpo")),
    "trimpi_dapo_no_poro": ("TriMPI-DAPO w/o PoRo", ("cpt", "sft", "dapo")),
    "trimpi_grpo_answers": ("TriMPI (PoRo-GRPO, direct answers)", ("cpt_answer", "direct_sft", "poro_grpo")),
    "trimpi_dapo_answers": ("TriMPI (PoRo-DAPO, direct answers)", ("cpt_answer", "direct_sft", "poro_dapo")),
}
TRACE_LINKS = ("cpt", "sft")  # chain links that read reasoning traces


def needs_traces(method: str) -> bool:
    return any(link in TRACE_LINKS for link in METHODS[method][1])

# Fields the pipeline sets itself (per option type); everything else may appear in the recipe.
STAGE_RESERVED = {"data", "model", "out", "stage", "target", "seed", "overwrite", "report_to", "merge_lora"}
RL_RESERVED = {"algo", "policy_rollout", "seed"}
WARMUP_RESERVED = {"data", "out", "model", "seed", "overwrite", "report_to", "progress"}
EVAL_RESERVED = {"baseline_scores", "progress", "skip_inapplicable"}


def _dataclass_section(cls, values: dict[str, Any], reserved: set[str], where: str) -> dict[str, Any]:
    """Check a recipe section against a dataclass's fields: unknown keys and wrong types raise ValueError."""
    known = {f.name for f in dataclasses.fields(cls)} - reserved
    for key in values:
        if key not in known:
            raise ValueError(f"{where}.{key}: unknown key (expected one of {', '.join(sorted(known))})")
    types = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        try:
            out[key] = TypeAdapter(types[key]).validate_python(value, strict=False)
        except ValidationError as e:
            raise ValueError(f"{where}.{key}: {e.errors()[0]['msg']} (got {value!r})") from None
    return out


class DataSpec(BaseModel):
    """Where the dataset comes from: built ClevrPolicy, built GTAPolicy, or an existing directory."""

    model_config = ConfigDict(extra="forbid")

    clevr: dict[str, Any] | None = None
    gta: dict[str, Any] | None = None
    path: str | None = None
    setting: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        given = [k for k in ("clevr", "gta", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("data: give exactly one of clevr, gta, path")
        if self.clevr is not None:
            from trimpi.data.clevr.config import ClevrConfig, describe

            try:
                cfg = ClevrConfig(**self.clevr)
            except ValidationError as e:
                raise ValueError(describe(e, lambda field: f"data.clevr.{field}")) from None
            settings = [f"{cfg.variant}-d{d}" for d in cfg.depths]
            if self.setting is not None and self.setting not in settings:
                raise ValueError(f"data.setting: {self.setting!r} is not built (expected one of {', '.join(settings)})")
        if self.gta is not None:
            unknown = set(self.gta) - {"gta_dir", "profiles_per_step", "seed"}
            if unknown:
                key = sorted(unknown)[0]
                raise ValueError(f"data.gta.{key}: unknown key (expected gta_dir, profiles_per_step, seed)")
            per_step = self.gta.get("profiles_per_step", 1)
            if not isinstance(per_step, int) or per_step < 1:
                raise ValueError(f"data.gta.profiles_per_step: must be an integer of at least 1, got {per_step!r}")
        return self


class JudgeSpec(BaseModel):
    """The recipe's LLM judge: an OpenAI-compatible endpoint (`url`) serving `model`, or a local `model`."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    model: str | None = None
    api_key_env: str | None = None  # the environment variable holding the endpoint's API key (none sent without)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        from trimpi.generation.client import is_url

        if url is not None and not is_url(url):
            raise ValueError(f"judge.url: expected an http:// or https:// address, got {url!r} "
                             "(a local judge is given as judge.model alone)")
        return url

    @field_validator("model")
    @classmethod
    def _model(cls, model: str | None) -> str | None:
        if model is not None and not model.strip():
            raise ValueError("judge.model: must not be empty")
        return model

    @model_validator(mode="after")
    def _given(self) -> JudgeSpec:
        if self.url is None and self.model is None:
            raise ValueError("judge: give url (an OpenAI-compatible endpoint, and the model it serves) or model alone "
                             "(a local model)")
        if self.api_key_env is not None and self.url is None:
            raise ValueError("judge.api_key_env: only an endpoint (judge.url) takes an API key")
        return self


class Recipe(BaseModel):
    """A whole `trimpi run` recipe (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "recipe"
    seed: int = 0
    model: str
    dtype: str | None = None
    data: DataSpec
    warmup: dict[str, Any] | None = None
    base: dict[str, Any] | None = None
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    methods: list[str]
    eval: dict[str, Any] = Field(default_factory=lambda: {"protocols": ["accuracy"]})
    accelerate: str | None = None
    engine: str = "hf"  # generation engine of RL rollouts and evaluation: hf or vllm (a stage's own key wins)
    judge: JudgeSpec | None = None  # LLM judge of eval steps and the RL reward

    @field_validator("engine")
    @classmethod
    def _engine(cls, engine: str) -> str:
        from trimpi.generation.registry import ENGINES

        if engine not in ENGINES:
            raise ValueError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
        return engine

    @field_validator("judge", mode="before")
    @classmethod
    def _judge_mapping(cls, judge: Any) -> Any:
        if judge is not None and not isinstance(judge, (dict, JudgeSpec)):
            raise ValueError(f"judge: expected a mapping ({{url: URL, model: NAME}} or {{model: LOCAL-MODEL}}), "
                             f"got {judge!r}")
        return judge

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        if not methods:
            raise ValueError("methods: at least one method is needed")
        for i, m in enumerate(methods):
            if m not in METHODS:
                raise ValueError(f"methods[{i}]: unknown method {m!r} (expected one of {', '.join(METHODS)})")
        return list(dict.fromkeys(methods))

    @model_validator(mode="after")
    def _sections(self) -> Recipe:
        from trimpi.eval.runner import EvalOptions
        from trimpi.train.rl.config import RLConfig
        from trimpi.train.sft import StageOptions
        from trimpi.train.warmup import WarmupOptions

        if self.engine != "hf":
            for name in ("grpo", "dapo"):
                self.stages[name] = {"engine": self.engine, **(self.stages.get(name) or {})}
            self.eval = {"engine": self.engine, **self.eval}
        for name, values in self.stages.items():
            if name in ("cpt", "sft", "direct_sft"):
                self.stages[name] = _dataclass_section(StageOptions, values, STAGE_RESERVED, f"stages.{name}")
            elif name in ("grpo", "dapo"):
                self.stages[name] = _dataclass_section(RLConfig, values, RL_RESERVED, f"stages.{name}")
            else:
                raise ValueError(f"stages.{name}: unknown stage (expected cpt, sft, direct_sft, grpo, dapo)")
        if self.warmup is not None:
            self.warmup = _dataclass_section(WarmupOptions, self.warmup, WARMUP_RESERVED, "warmup")
        if self.base is not None:
            self.base = base_section(self.base, self.warmup is not None)
        self.eval = _dataclass_section(EvalOptions, self.eval, EVAL_RESERVED, "eval")
        try:
            EvalOptions(**self.eval).check(name=lambda field: f"eval.{field}")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self


def base_section(values: dict[str, Any], has_warmup: bool) -> dict[str, Any]:
    """Check the `base:` section: its own keys, its warm-up options and each of its datasets."""
    from trimpi.pipeline.base import BaseOptions
    from trimpi.train.warmup import WarmupOptions

    if has_warmup:
        raise ValueError("warmup: with a policy-following base, give the warm-up under base.warmup")
    values = _dataclass_section(BaseOptions, values, set(), "base")
    values["warmup"] = _dataclass_section(WarmupOptions, values.get("warmup") or {}, WARMUP_RESERVED, "base.warmup")
    for i, spec in enumerate(values.get("datasets") or []):
        try:
            DataSpec(**spec)
        except ValidationError as e:
            err = e.errors()[0]
            raise ValueError(f"base.datasets[{i}]: {err['msg'].removeprefix('Value error, ')}") from None
    try:
        BaseOptions(**values).check()
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return values


def _one_line(e: ValidationError, source: str) -> str:
    """Every problem, in one line (the first one first, then "; also: ..."): a misspelled key is named as
    given (`modle: unknown key (did you mean 'model'?)`), not as the required key it leaves missing."""
    import difflib

    errors = e.errors()
    missing = [".".join(str(p) for p in x["loc"]) for x in errors if x["type"] == "missing"]
    explained: set[str] = set()  # required keys a misspelled one stands for
    problems = []
    for err in sorted(errors, key=lambda x: x["type"] != "extra_forbidden"):
        msg = err["msg"].removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc, missing, n=1)
            explained.update(close)
            problems.append(f"{loc}: unknown key" + (f" (did you mean '{close[0]}'?)" if close else ""))
        elif err["type"] == "missing":
            if loc not in explained:
                problems.append(f"{loc}: required key missing")
        elif loc and not msg.startswith(loc.split(".")[0]):
            problems.append(f"{loc}: {msg.splitlines()[0]}")
        else:
            problems.append(msg.splitlines()[0])
    problems = list(dict.fromkeys(problems))
    return f"{source}: {problems[0]}" + (f"; also: {'; '.join(problems[1:])}" if len(problems) > 1 else "")


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int):
        super().__init__(f"{key}: given twice (line {line})")
        self.key, self.line = key, line


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (not "the last wins")."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_recipe(values: Any, source: str = "recipe") -> Recipe:
    """Validate a recipe mapping; a problem raises a one-line ConfigError naming the key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return Recipe(**values)
    except ValidationError as e:
        raise ConfigError(_one_line(e, source).splitlines()[0]) from None


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a YAML recipe; `overrides` replace top-level keys (e.g. {"model": ...})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        values = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except DuplicateKeyError as e:
        raise ConfigError(f"{path}:{e.line}: {e.key}: key given twice (the first value would be lost)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if isinstance(values, dict) and overrides:
        values = {**values, **overrides}
    recipe = parse_recipe(values, str(path))
    if recipe.accelerate is not None:
        recipe.accelerate = _accelerate_path(recipe.accelerate, path)
    return recipe


def _accelerate_path(value: str, recipe_path: Path) -> str:
    """The accelerate config as given (relative to the working directory) or next to the recipe."""
    for candidate in (Path(value), recipe_path.parent / value):
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(f"{recipe_path}: accelerate: {value}: file not found")
