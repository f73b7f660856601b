"""Reasoning traces written by a teacher model with the policy in context (SPEC §2, "forward CoT").

    client = make_client("http://localhost:8000/v1", model="Qwen2.5-VL-7B-Instruct")
    summary = generate_traces(client, "data/clevr/T-d2", opts=TeacherOptions(mode="forward"))

For each record of the split the teacher sees the policy, the images and the query (and, in
reverse mode, the gold answer) and writes `<think>…</think>` then an answer. A trace is kept
when it passes `check_trace`: forward mode needs a correct answer (ClevrPolicy: exact
\\boxed{} match; GTAPolicy: tool-call overall score ≥ `min_score`); reverse mode also needs
the reasoning to end at the gold answer without saying it was given. Each record gets up to
`samples_per_example` attempts (fewer when the teacher repeats a rejected reply word for word,
as a greedy one does). Kept records carry `reasoning` = the teacher's think text,
`response` = the gold response and meta.teacher = {model, mode, attempts, score}; their paths
are rewritten relative to OUT's directory when it is not the dataset directory.

Files (default OUT = DIR/train_cot_teacher.jsonl):
    OUT                    kept records, in input order (written atomically at the end)
    OUT.progress           append-only log: a config line, then one line per finished record;
                           rerunning with the same settings skips the ids it lists
    <OUT stem>.summary.json  kept / attempted / acceptance rate, rejections by reason
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trimpi.data.answers import DEFAULT_TEXT_SCORER, Scoring, check_custom_code, score_answer
from trimpi.data.gta.scorers import SCORER_NAMES, TextScorer, get_scorer
from trimpi.data.io import dumps, write_json, write_jsonl
from trimpi.data.schema import POLICY_PLACEMENTS, PolicyStore, Record, load_records
from trimpi.data.teacher_prompts import MODES, ends_at_gold, leaks_given_answer, split_reply, teacher_messages
from trimpi.errors import ConfigError, DataError

DEFAULT_OUT_NAME = "train_cot_teacher.jsonl"
OUT_SPLIT = "train_cot"
REPLY_KEEP_CHARS = 2000  # rejected replies are logged, cut to this length


@dataclass
class TeacherOptions:
    """Settings of one trace-generation run (those that shape the output are checked on resume)."""

    mode: str = "forward"
    split: str = "train"
    limit: int | None = None
    samples_per_example: int = 4
    batch_size: int = 8
    max_new_tokens: int = 1024
    temperature: float = 0.7
    seed: int = 0
    placement: str = "system"
    min_score: float = 1.0
    # A kept trace's answer is one RL and `trimpi eval` score correct: the same GTA text scorer by default.
    scorer: str = DEFAULT_TEXT_SCORER
    concurrency: int = 1
    overwrite: bool = False
    progress: bool = True

    def check(self) -> TeacherOptions:
        if self.mode not in MODES:
            raise ConfigError(f"--mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if self.placement not in POLICY_PLACEMENTS:
            raise ConfigError(f"--placement: expected one of {', '.join(POLICY_PLACEMENTS)}, got {self.placement!r}")
        for key in ("samples_per_example", "batch_size", "max_new_tokens", "concurrency"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')}: must be at least 1, got {getattr(self, key)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit: must be at least 1, got {self.limit}")
        if self.temperature < 0:
            raise ConfigError(f"--temperature: must be ≥ 0, got {self.temperature}")
        if self.scorer not in SCORER_NAMES:
            raise ConfigError(f"--scorer: expected one of {', '.join(SCORER_NAMES)}, got {self.scorer!r}")
        if not 0.0 < self.min_score <= 1.0:
            raise ConfigError(f"--min-score: must be in (0, 1], got {self.min_score}")
        return self

    def fingerprint(self, teacher: str, data: Path) -> dict[str, Any]:
        """The settings a progress file must match to be resumed."""
        keys = ("mode", "split", "samples_per_example", "max_new_tokens", "temperature", "seed", "placement",
                "min_score", "scorer")
        return {"teacher": teacher, "data": str(data.resolve()), **{k: getattr(self, k) for k in keys}}


# ---- checking one reply ------------------------------------------------------------------


def answer_score(record: Record, text: str, scorer: TextScorer | None = None) -> float:
    """Score of the reply's answer in [0, 1] by the record's answer type (the evaluation's score)."""
    return score_answer(text, record, Scoring(scorer if scorer is not None else TeacherOptions.scorer)).score


def check_trace(record: Record, reply: str, mode: str, scorer=None, min_score: float = 1.0) -> dict[str, Any]:
    """{"ok", "reasoning", "score", "reason"} of one teacher reply; `reason` names a rejection."""
    reasoning, _answer, problem = split_reply(reply)
    if problem:
        return {"ok": False, "reasoning": None, "score": 0.0, "reason": problem}
    score = answer_score(record, reply, scorer)
    reason = None
    if score < min_score:
        reason = "wrong_answer"
    elif mode == "reverse" and leaks_given_answer(reasoning):
        reason = "mentions_given_answer"
    elif mode == "reverse" and not ends_at_gold(reasoning, record):
        reason = "not_ending_at_gold"
    return {"ok": reason is None, "reasoning": reasoning if reason is None else None, "score": score,
            "reason": reason}


def rebase_paths(record: Record, data: Path, out_dir: Path) -> Record:
    """`record` with its image, scene and policy paths relative to `out_dir` instead of `data`."""
    data, out_dir = data.resolve(), out_dir.resolve()
    if data == out_dir:
        return record

    def move(p: str | None) -> str | None:
        return None if p is None else Path(os.path.relpath(data / p, out_dir)).as_posix()

    row = record.to_dict()
    row.update(images=[move(p) for p in record.images], scene=move(record.scene),
               policy_path=move(record.policy_path))
    return Record.from_dict(row)


def traced_record(record: Record, reasoning: str, teacher: str, mode: str, attempts: int, score: float) -> Record:
    """A copy of `record` with the teacher's reasoning, the gold response and meta.teacher."""
    row = record.to_dict()
    row.update(reasoning=reasoning, response=record.response, split=OUT_SPLIT)
    row["meta"] = {**record.meta, "teacher": {"model": teacher, "mode": mode, "attempts": attempts, "score": score}}
    return Record.from_dict(row)


# ---- files ----------------------------------------------------------------------------------


def default_out(data: str | Path) -> Path:
    return Path(data) / DEFAULT_OUT_NAME


def progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress")


def summary_path(out: Path) -> Path:
    return out.with_name(out.stem + ".summary.json")


def split_path(data: Path, split: str) -> Path:
    """DIR/<split>.jsonl, with a one-line DataError naming what is missing."""
    if not data.is_dir():
        raise DataError(f"{data}: dataset directory not found")
    path = data / (split if split.endswith(".jsonl") else f"{split}.jsonl")
    if not path.is_file():
        settings = sorted(p.name for p in data.iterdir() if (p / path.name).is_file())
        hint = f"; settings inside: {', '.join(settings)}" if settings else ""
        raise DataError(f"{path}: file not found (pass --split or a dataset directory{hint})")
    return path


def read_progress(path: Path, fingerprint: dict[str, Any], overwrite: bool) -> dict[str, dict[str, Any]]:
    """Finished rows by id from an earlier run; starts a new log when there is none (or on overwrite).

    A malformed last line (a run killed mid-write) is dropped; a log written with other
    settings is a one-line ConfigError unless `overwrite`.
    """
    if overwrite or not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps({"config": fingerprint}) + "\n", encoding="utf-8")
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n < len(lines):
                raise DataError(f"{path}:{n}: malformed progress line (pass --overwrite to start again)") from None
    if not rows or rows[0].get("config") != fingerprint:
        raise ConfigError(f"{path}: written by a run with other settings (pass --overwrite to start again, or --out)")
    path.write_text("".join(dumps(r) + "\n" for r in rows), encoding="utf-8")  # drop a torn last line
    return {r["id"]: r for r in rows[1:] if "id" in r}


def append_progress(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---- the run ----------------------------------------------------------------------------------


def _seed(seed: int) -> None:
    """Seed Python and, when a local model has loaded it, torch (endpoint runs never import torch)."""
    random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def _complete(client, conversations: list, opts: TeacherOptions) -> list[str]:
    """One reply per conversation; endpoint calls run `concurrency` at a time."""
    kwargs = {"max_tokens": opts.max_new_tokens, "temperature": opts.temperature}
    if opts.concurrency <= 1 or len(conversations) <= 1:
        return client.complete(conversations, **kwargs)
    with ThreadPoolExecutor(max_workers=opts.concurrency) as pool:
        return [r[0] for r in pool.map(lambda c: client.complete([c], **kwargs), conversations)]


def _run_batch(client, batch: list[Record], root: Path, store: PolicyStore, opts: TeacherOptions, scorer,
               log: Callable[[list[dict[str, Any]]], None], batch_no: int) -> list[dict[str, Any]]:
    """Up to K attempts per record of the batch; finished rows are logged as soon as they are known."""
    teacher = getattr(client, "name", "teacher")
    messages = {r.id: teacher_messages(r, root, store.get(r) if r.policy_path else None, opts.mode, opts.placement)
                for r in batch}
    pending, done = list(batch), []
    rejections: dict[str, Counter] = {r.id: Counter() for r in batch}
    last: dict[str, str] = {}
    for attempt in range(1, opts.samples_per_example + 1):
        _seed(opts.seed * 1_000_003 + batch_no * 1009 + attempt)
        replies = _complete(client, [messages[r.id] for r in pending], opts)
        if len(replies) != len(pending):
            raise DataError(f"teacher {teacher}: {len(replies)} replies for {len(pending)} prompts")
        still, finished, gave_up = [], [], []
        for record, reply in zip(pending, replies):
            verdict = check_trace(record, reply, opts.mode, scorer, opts.min_score)
            if verdict["ok"]:
                rec = traced_record(record, verdict["reasoning"], teacher, opts.mode, attempt, verdict["score"])
                finished.append({"id": record.id, "kept": True, "attempts": attempt,
                                 "rejections": dict(rejections[record.id]), "record": rec.to_dict()})
            else:
                rejections[record.id][verdict["reason"]] += 1
                repeated = last.get(record.id) == reply  # a teacher repeating itself is not asked again
                last[record.id] = reply
                (gave_up if repeated or attempt == opts.samples_per_example else still).append(record)
        finished += [{"id": r.id, "kept": False, "attempts": attempt, "rejections": dict(rejections[r.id]),
                      "last_reply": (last[r.id] or "")[:REPLY_KEEP_CHARS]} for r in gave_up]
        log(finished)
        done += finished
        pending = still
        if not pending:
            break
    return done


def summarize(rows: list[dict[str, Any]], teacher: str, opts: TeacherOptions, out: Path, skipped: int) -> dict:
    """kept / attempted / acceptance rate, teacher calls and rejections by reason."""
    kept = sum(1 for r in rows if r["kept"])
    calls = sum(r["attempts"] for r in rows)
    reasons: Counter = Counter()
    for r in rows:
        reasons.update(r.get("rejections", {}))
    return {
        "teacher": teacher, "mode": opts.mode, "split": opts.split, "out": str(out),
        "attempted": len(rows), "kept": kept, "acceptance_rate": kept / len(rows) if rows else 0.0,
        "teacher_calls": calls, "call_acceptance_rate": kept / calls if calls else 0.0,
        "rejections": dict(sorted(reasons.items())), "resumed": skipped, "options": asdict(opts),
    }


def measure_call(client, record: Record, root: Path, store: PolicyStore, opts: TeacherOptions) -> float:
    """Seconds of one teacher call on one record (the reply is discarded: the run itself is unchanged)."""
    import time

    messages = teacher_messages(record, root, store.get(record) if record.policy_path else None, opts.mode,
                                opts.placement)
    start = time.perf_counter()
    _complete(client, [messages], opts)
    return time.perf_counter() - start


def estimate_line(seconds: float, todo: int, opts: TeacherOptions) -> str:
    """The measured time per record and what the whole run will take (every first attempt kept .. all tried)."""
    def hms(s: float) -> str:
        return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"

    low, high = seconds * todo, seconds * todo * opts.samples_per_example
    return (f"teacher: {seconds:.1f} s per record (one call, measured); {todo} records: about {hms(low)} if every "
            f"first attempt is kept, up to {hms(high)} with {opts.samples_per_example} attempts each "
            "(batched calls are faster per record; the progress bar shows the ETA)")


def generate_traces(client, data: str | Path, out: str | Path | None = None,
                    opts: TeacherOptions | None = None, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Ask `client` (a `trimpi.generation.client.ChatClient`) for a trace per record; write OUT and its summary.
    With `echo`, one call is timed first and the estimate for the whole run is printed before it starts.

    Returns the summary dict (also written to <OUT stem>.summary.json).
    """
    opts = (opts or TeacherOptions()).check()
    data = Path(data)
    records = load_records(split_path(data, opts.split))
    records = records[: opts.limit] if opts.limit else records
    if not records:
        raise DataError(f"{split_path(data, opts.split)}: no records")
    check_custom_code(records, str(split_path(data, opts.split)))  # the answer check runs no untrusted code
    if len({r.id for r in records}) != len(records):
        raise DataError(f"{split_path(data, opts.split)}: record ids are not unique")
    out = Path(out) if out else default_out(data)
    teacher = getattr(client, "name", "teacher")
    log_path = progress_path(out)
    done = read_progress(log_path, opts.fingerprint(teacher, data), opts.overwrite)
    skipped = sum(1 for r in records if r.id in done)
    todo = [r for r in records if r.id not in done]
    store = PolicyStore(data)
    scorer = get_scorer(opts.scorer) if any(r.task == "gta" for r in todo) else None
    if echo is not None and todo:
        echo(estimate_line(measure_call(client, todo[0], data, store, opts), len(todo), opts))
    from tqdm import tqdm

    bar = tqdm(total=len(records), initial=skipped, desc=f"cot {opts.mode}", unit="rec", disable=not opts.progress)

    def log(rows: list[dict[str, Any]]) -> None:
        append_progress(log_path, rows)
        done.update({r["id"]: r for r in rows})
        bar.update(len(rows))
        bar.set_postfix(kept=sum(1 for r in done.values() if r["kept"]))

    try:
        for k in range(0, len(todo), opts.batch_size):
            _run_batch(client, todo[k : k + opts.batch_size], data, store, opts, scorer, log, k // opts.batch_size)
    finally:
        bar.close()
    rows = [done[r.id] for r in records]
    kept = [rebase_paths(Record.from_dict(r["record"]), data, out.parent) for r in rows if r["kept"]]
    write_jsonl(out, [r.to_dict() for r in kept])
    summary = summarize(rows, teacher, opts, out, skipped)
    write_json(summary_path(out), summary)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """kept / attempted (rate), teacher calls, and the main rejection reasons, on one line."""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary["rejections"].items(), key=lambda kv: -kv[1]))
    return (f"kept {summary['kept']} / {summary['attempted']} records ({100 * summary['acceptance_rate']:.1f} %), "
            f"{summary['teacher_calls']} teacher calls" + (f"; rejected attempts: {reasons}" if reasons else ""))
