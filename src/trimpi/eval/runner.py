"""Run evaluation protocols on one or more dataset directories and write predictions and scores.

    from trimpi.eval import EvalOptions, Subject, evaluate_model
    subject = Subject.from_model(model, processor, batch_size=8)
    results = evaluate_model(subject, "data/clevr/T-d2", "runs/eval", EvalOptions(protocols=["accuracy"]))

With several datasets (a directory of dataset directories) each gets its own sub-directory
of `out` and `out/scores.json` gathers them under "datasets"; with one, everything is in `out`.
Scores are rewritten after every protocol, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trimpi.data.gta.scorers import TextScorer, get_scorer
from trimpi.data.io import check_writable
from trimpi.data.schema import POLICY_PLACEMENTS, PolicyStore, Record, load_records, most_prompt_images
from trimpi.errors import ConfigError, DataError
from trimpi.eval import efficiency as eff
from trimpi.eval import files
from trimpi.eval.forgetting import baseline_from_file, compare
from trimpi.eval.generate import build_prompts, make_engine, neutralize_generation_config
from trimpi.eval.judge import judge_rows, summarize_judge
from trimpi.eval.perception import run_perception
from trimpi.eval.protocols import PROTOCOLS, check_files, inapplicable, resolve_datasets
from trimpi.eval.referral import score_referral, summarize_referral
from trimpi.eval.scoring import check_judge, score_example, summarize
from trimpi.generation.client import ChatClient
from trimpi.generation.engine import Completion, GenerationEngine
from trimpi.generation.greedy import generate_texts
from trimpi.generation.judge import AnswerJudge
from trimpi.generation.prompts import PromptBuilder
from trimpi.generation.registry import ENGINES
from trimpi.generation.vllm_engine import VLLMOptions


@dataclass
class EvalOptions:
    """How to evaluate (the CLI options of `trimpi eval`)."""

    protocols: list[str] = field(default_factory=lambda: ["accuracy"])
    batch_size: int = 8
    max_new_tokens: int = 512
    limit: int | None = None  # first N records of each file
    placement: str = "system"  # where the policy goes: system turn or start of the user turn
    scorer: str = "default"  # GTA text-similarity scorer
    judge_samples: int = 100  # responses rated by the judge (referral without an exact reference)
    judge_max_tokens: int = 256
    efficiency_samples: int = 8  # records whose prefill is timed
    efficiency_repeats: int = 3  # forward passes per timing (median)
    baseline_scores: Path | None = None  # earlier scores.json for forgetting
    skip_inapplicable: bool = False  # ("--protocols all") skip protocols a dataset lacks files or a judge for
    progress: bool = True
    engine: str = "hf"  # generation engine: hf or vllm
    vllm_max_model_len: int | None = None  # vLLM's longest prompt + answer (default: the model's, at most 8192)
    vllm_enforce_eager: bool | None = None  # None: eager on CPU, compiled (CUDA graphs) on GPU

    def vllm_options(self) -> VLLMOptions:
        return VLLMOptions(max_model_len=self.vllm_max_model_len, enforce_eager=self.vllm_enforce_eager)

    def check(self, name: Callable[[str], str] | None = None) -> None:
        """Raise a one-line ConfigError for a bad value; `name(field)` spells the field as the user wrote it
        (default: the `trimpi eval` flag; a recipe passes its key)."""
        name = name or cli_flag
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ConfigError(f"{name('protocols')}: unknown protocol {unknown[0]!r} (expected {', '.join(PROTOCOLS)})")
        if self.engine not in ENGINES:
            raise ConfigError(f"{name('engine')}: expected one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.placement not in POLICY_PLACEMENTS:
            raise ConfigError(f"{name('placement')}: expected one of {', '.join(POLICY_PLACEMENTS)}, "
                              f"got {self.placement!r}")
        for key in ("batch_size", "max_new_tokens", "judge_samples", "efficiency_repeats"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{name(key)}: must be at least 1, got {getattr(self, key)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{name('limit')}: must be at least 1, got {self.limit}")
        if self.vllm_max_model_len is not None and self.vllm_max_model_len < 1:
            raise ConfigError(f"{name('vllm_max_model_len')}: must be at least 1, got {self.vllm_max_model_len}")
        if self.efficiency_samples < 0:
            raise ConfigError(f"{name('efficiency_samples')}: must be at least 0, got {self.efficiency_samples}")


def cli_flag(field: str) -> str:
    """The command-line flag of an option field: batch_size -> --batch-size."""
    return "--" + field.replace("_", "-")


@dataclass
class Subject:
    """A model under evaluation: its processor, a generation engine, and the model itself (for timing)."""

    processor: Any
    engine: GenerationEngine
    model: Any = None
    name: str = "model"

    @classmethod
    def from_model(cls, model, processor, batch_size: int = 8, name: str = "model", engine: str = "hf",
                   max_images: int | None = None, vllm_options: VLLMOptions | None = None) -> Subject:
        """max_images: the most images one prompt will show (`most_images_generated`; vLLM needs it)."""
        return cls(processor=processor, model=model, name=name,
                   engine=make_engine(model, processor, batch_size, engine, max_images, vllm_options))


class DatasetEval:
    """The protocols on one dataset directory; generations are shared between protocols that need the same."""

    def __init__(self, subject: Subject, dataset: Path, out: Path, opts: EvalOptions, scorer: TextScorer,
                 judge: ChatClient | None = None, meta: dict[str, Any] | None = None):
        self.subject, self.dataset, self.out, self.opts = subject, Path(dataset), Path(out), opts
        self.scorer, self.judge = scorer, judge
        self.store = PolicyStore(self.dataset)
        self.answer_judge = AnswerJudge(judge, self.store) if judge is not None else None
        self.builder = PromptBuilder(subject.processor, self.dataset, placement=opts.placement)
        self.scores: dict[str, Any] = {"dataset": self.dataset.name, "data": str(self.dataset), **(meta or {}),
                                       "protocols": previous_protocols(self.out, subject.name, self.dataset)}
        self._records: dict[str, list[Record]] = {}
        self._generated: dict[tuple[str, bool], list[Completion]] = {}

    def records(self, split: str) -> list[Record]:
        if split not in self._records:
            rows = load_records(self.dataset / f"{split}.jsonl")
            self._records[split] = rows[: self.opts.limit] if self.opts.limit else rows
        return self._records[split]

    def completions(self, split: str, with_policy: bool, desc: str) -> list[Completion]:
        """Greedy completions for a split, with or without each record's policy (computed once)."""
        key = (split, with_policy)
        if key not in self._generated:
            records = self.records(split)
            prompts = build_prompts(self.builder, records, self.store if with_policy else None)
            self._generated[key] = generate_texts(self.subject.engine, prompts, self.opts.batch_size,
                                                  self.opts.max_new_tokens, desc, self.opts.progress)
        return self._generated[key]

    def answer_rows(self, split: str, with_policy: bool, desc: str) -> list[dict[str, Any]]:
        """One scored prediction row per record."""
        rows = []
        for rec, comp in zip(self.records(split), self.completions(split, with_policy, desc), strict=True):
            rows.append({
                "id": rec.id, "task": rec.task, "policy": rec.policy, "policy_in_prompt": with_policy,
                "gold": rec.answer, "completion": comp.text, "completion_tokens": len(comp.token_ids),
                "truncated": comp.truncated, **score_example(rec, comp.text, self.scorer, self.answer_judge),
            })
        return rows

    def answers(self, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        spec = PROTOCOLS[name]
        rows = self.answer_rows(spec.split, spec.with_policy, f"{self.dataset.name}:{name}")
        summary = summarize(rows, self.scorer)
        if name == "forgetting":
            summary.setdefault("accuracy", summary["score"])
            if self.opts.baseline_scores is not None:
                before = baseline_from_file(self.opts.baseline_scores, self.dataset.name)
                summary.update(compare(summary["accuracy"], before, str(self.opts.baseline_scores)))
        return rows, summary

    def referral(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Exact referral for ClevrPolicy records; an LLM judge on the first judge_samples otherwise."""
        records = self.records("test")
        comps = self.completions("test", False, f"{self.dataset.name}:referral")
        if all(r.task == "clevr" for r in records):
            rows = [{"id": r.id, "completion": c.text, **score_referral(r, c.text, self.dataset, self.store)}
                    for r, c in zip(records, comps, strict=True)]
            return rows, summarize_referral(rows)
        if self.judge is None:
            raise ConfigError(f"{self.dataset}: referral on non-ClevrPolicy records needs --judge")
        items = [(r, self.store.get(r), c.text) for r, c in zip(records, comps, strict=True)][: self.opts.judge_samples]
        judged = judge_rows(self.judge, items, self.opts.judge_max_tokens)
        rows = [{"id": r.id, "completion": text, **j} for (r, _, text), j in zip(items, judged, strict=True)]
        return rows, summarize_judge(rows, self.judge.name)

    def efficiency(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        records = [r for r in self.records("test") if r.policy_path]
        if not records:
            raise ConfigError(f"{self.dataset / 'test.jsonl'}: no record has a policy; efficiency needs one")
        pairs = [(r.id, self.builder(r, self.store.get(r)), self.builder(r)) for r in records]
        model = self.subject.model
        samples = self.opts.efficiency_samples if model is not None else 0
        rows = eff.measure_rows(model, self.subject.processor, pairs, samples, self.opts.efficiency_repeats,
                                self.opts.progress)
        device = str(next(model.parameters()).device) if model is not None else "none"
        return rows, eff.summarize_efficiency(rows, self.opts.efficiency_repeats, device)

    def skip(self, name: str, reason: str) -> None:
        """Record that a protocol does not apply to this dataset."""
        self.scores["protocols"][name] = {"skipped": reason}
        files.write_scores(self.out, self.scores)

    def run(self, name: str) -> dict[str, Any]:
        """Run one protocol, write its predictions, update scores.json; return its summary."""
        start = time.perf_counter()
        if name == "referral":
            rows, summary = self.referral()
        elif name == "efficiency":
            rows, summary = self.efficiency()
        elif name == "perception":
            rows, summary = run_perception(self.subject.model, self.subject.processor, self.dataset,
                                           self.records("test"), self.opts.batch_size, self.opts.progress)
        else:
            rows, summary = self.answers(name)
        spec = PROTOCOLS[name]
        warn_if_cut_short(f"{self.dataset}:{name}", summary.get("truncated_rate", 0.0), self.opts.max_new_tokens)
        path = files.write_predictions(self.out, name, rows)
        summary = {"file": spec.filename, "policy_in_prompt": spec.with_policy if spec.generates else "both",
                   **summary, "predictions": path.name, "seconds": round(time.perf_counter() - start, 3)}
        self.scores["protocols"][name] = summary
        files.write_scores(self.out, self.scores)
        return summary


TRUNCATION_WARNING = 0.5  # share of length-cut completions above which scores mostly measure the cap


def warn_if_cut_short(where: str, truncated_rate: float, max_new_tokens: int) -> None:
    """Warn when most completions stopped at the token cap: their answers were cut off, not wrong."""
    if truncated_rate >= TRUNCATION_WARNING:
        warnings.warn(f"{where}: {truncated_rate:.0%} of completions stopped at max_new_tokens={max_new_tokens} "
                      "before finishing; raise max_new_tokens", UserWarning, stacklevel=2)


def previous_protocols(out: Path, model: str, dataset: Path) -> dict[str, Any]:
    """Results already in out/scores.json for the same model and dataset (kept when other protocols run)."""
    path = Path(out) / files.SCORES
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if old.get("model") != model or old.get("data") != str(dataset):
        return {}
    return dict(old.get("protocols") or {})


def validate(datasets: list[Path], opts: EvalOptions, judge: bool, out: str | Path | None = None) -> None:
    """Fail before any work: missing, empty or malformed split files, referral without a reference or a
    judge, an output directory that cannot be written."""
    opts.check()
    if opts.baseline_scores is not None and not Path(opts.baseline_scores).is_file():
        raise DataError(f"{opts.baseline_scores}: file not found (--baseline-scores)")
    for ds in datasets:
        protocols = opts.protocols
        if opts.skip_inapplicable:
            protocols = [p for p in opts.protocols if inapplicable(ds, p, judge) is None]
        check_files(ds, protocols, judge)
        check_judge(ds, protocols, judge, opts.limit)
    if opts.skip_inapplicable and not any(inapplicable(ds, p, judge) is None
                                          for ds in datasets for p in opts.protocols):
        raise DataError(f"{datasets[0]}: none of the protocols {', '.join(opts.protocols)} applies")
    if out is not None:
        check_writable(out)


def most_images_generated(datasets: list[Path], protocols: list[str], limit: int | None = None) -> int:
    """The most images one prompt shows among those the protocols generate from on these datasets."""
    most = 0
    for ds in datasets:
        store = PolicyStore(ds)
        for spec in (PROTOCOLS[name] for name in protocols):
            if spec.generates and (ds / spec.filename).is_file():
                records = load_records(ds / spec.filename)[: limit or None]
                most = max(most, most_prompt_images(records, store if spec.with_policy else None))
    return most


def dataset_outputs(datasets: list[Path], out: Path) -> list[Path]:
    return [Path(out)] if len(datasets) == 1 else [Path(out) / ds.name for ds in datasets]


def evaluate_model(subject: Subject, data: str | Path, out: str | Path, opts: EvalOptions,
                   judge: ChatClient | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every protocol on every dataset under `data`; returns {dataset name: scores} and writes the files."""
    datasets = resolve_datasets(data)
    validate(datasets, opts, judge is not None, out)
    scorer = get_scorer(opts.scorer)
    meta = {"model": subject.name, "options": {k: (str(v) if isinstance(v, Path) else v)
                                               for k, v in asdict(opts).items()},
            "scorer": scorer.name, "judge": judge.name if judge else None, "versions": files.versions(),
            **(meta or {})}
    results: dict[str, Any] = {}
    for ds, ds_out in zip(datasets, dataset_outputs(datasets, Path(out)), strict=True):
        runner = DatasetEval(subject, ds, ds_out, opts, scorer, judge, meta)
        for name in opts.protocols:
            reason = inapplicable(ds, name, judge is not None)
            if reason is None:
                runner.run(name)
            else:  # only with skip_inapplicable: validate() refused the rest
                runner.skip(name, reason)
        results[ds.name] = runner.scores
    if len(datasets) > 1:
        files.write_scores(Path(out), {**meta, "datasets": {k: v["protocols"] for k, v in results.items()}})
    return results


def add_forgetting_baseline(baseline: Subject, data: str | Path, out: str | Path, opts: EvalOptions,
                            results: dict[str, Any], scorer: TextScorer | None = None) -> dict[str, Any]:
    """Evaluate `baseline` on general_test.jsonl of each dataset and record before vs after in `forgetting`.

    Writes predictions_forgetting_baseline.jsonl and updates each scores.json (and the summary)."""
    datasets = resolve_datasets(data)
    scorer = scorer or get_scorer(opts.scorer)
    for ds, ds_out in zip(datasets, dataset_outputs(datasets, Path(out)), strict=True):
        scores = results[ds.name]
        after = scores["protocols"].get("forgetting")
        if after is None:
            continue
        runner = DatasetEval(baseline, ds, ds_out, opts, scorer)
        rows = runner.answer_rows("general_test", False, f"{ds.name}:forgetting (baseline)")
        before = summarize(rows, scorer)["score"]
        path = files.write_predictions(ds_out, "forgetting_baseline", rows)
        after.update(compare(after["accuracy"], before, baseline.name))
        after["baseline_predictions"] = path.name
        files.write_scores(ds_out, scores)
    if len(datasets) > 1:
        meta = {k: v for k, v in next(iter(results.values())).items() if k not in ("dataset", "data", "protocols")}
        files.write_scores(Path(out), {**meta, "datasets": {k: v["protocols"] for k, v in results.items()}})
    return results


def run_eval(model: str, data: str | Path, out: str | Path, opts: EvalOptions, judge: str | None = None,
             judge_model: str | None = None, baseline_model: str | None = None, dtype: str | None = None,
             device: str | None = None, seed: int = 0, judge_api_key_env: str | None = None) -> dict[str, Any]:
    """Load the model (and judge / baseline), run `evaluate_model`, then the forgetting baseline if asked.
    An endpoint judge gets the API key held by the variable `judge_api_key_env` (none without it).

    Everything that can be checked without a model (protocols, files, options) is checked first."""
    from trimpi.generation.client import endpoint_key, is_url, make_client
    from trimpi.models.loading import load_model

    datasets = resolve_datasets(data)
    validate(datasets, opts, judge is not None, out)
    if judge and is_url(judge):
        endpoint_key(judge, judge_api_key_env)  # a key that may not go there is refused before any model loads
    if baseline_model and opts.baseline_scores:
        raise ConfigError("--baseline-model and --baseline-scores: give one of them")
    net, processor = load_model(model, dtype=dtype, device=device, data=datasets[0], seed=seed)
    changed = neutralize_generation_config(net)
    subject = Subject.from_model(net, processor, opts.batch_size, name=str(model), engine=opts.engine,
                                 max_images=most_images_generated(datasets, opts.protocols, opts.limit),
                                 vllm_options=opts.vllm_options())
    client = (make_client(judge, judge_model, api_key_env=judge_api_key_env, dtype=dtype, device=device)
              if judge else None)
    param = next(net.parameters())
    meta = {"dtype": str(param.dtype).removeprefix("torch."), "device": str(param.device),
            "generation_overrides": changed}
    results = evaluate_model(subject, data, out, opts, client, meta=meta)
    subject.engine.close()
    if baseline_model and "forgetting" in opts.protocols:
        del subject, net
        base, base_proc = load_model(baseline_model, dtype=dtype, device=device, data=datasets[0], seed=seed)
        neutralize_generation_config(base)
        baseline = Subject.from_model(base, base_proc, opts.batch_size, name=str(baseline_model), engine=opts.engine,
                                      max_images=most_images_generated(datasets, ["forgetting"], opts.limit),
                                      vllm_options=opts.vllm_options())
        add_forgetting_baseline(baseline, data, out, opts, results)
        baseline.engine.close()
    return results
