"""Run the stages of a micro-base pretraining in order, resumably, and export the result.

    DIR/run.json                   the options (a rerun must use the same ones)
    DIR/stage-1-vision/corpus/     the stage's corpus shards
    DIR/stage-1-vision/checkpoint/ model, head, optimizer, scheduler, step, RNG (written every
                                   `save_minutes`, at the end of a chunk and at the end of the stage)
    DIR/stage-1-vision/done.json   the stage's gate measurement, time and final losses
    DIR/heldout*/                  held-out scenes and policies of the gates

A rerun of the same command continues where the last one stopped: finished stages are skipped
(the next starts from the last one's weights), an unfinished one resumes from its checkpoint, and
it reaches the same weights as an uninterrupted run (on the same machine and thread count). A
missed gate stops the run before the next stage, naming the number; `--force` goes on and the
model card records it.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from pathlib import Path

import torch

from trimpi.data.io import mark_owned, read_json, write_json
from trimpi.errors import ConfigError
from trimpi.train.perception import PerceptionHead, existence_labels
from trimpi.train.pretrain import gates
from trimpi.train.pretrain.options import RUN_CONTROLS, PretrainOptions, options_dict, options_from_dict
from trimpi.train.pretrain.trainer import CHECKPOINT, STATE, StageTrainer, build_model, load_state, read_progress

RUN_FILE = "run.json"
FAMILY_WORDS = {"fast_vlm": "FastVLM (ConvNeXt eye, MLP projector, Qwen2 text model)",
                "idefics3": "Idefics3 (SigLIP eye, pixel-shuffle connector, Llama text model)"}
DONE = "done.json"


def stage_folder(out: Path, index: int, name: str) -> Path:
    return out / f"stage-{index + 1}-{name}"


def check_same_options(out: Path, opts: PretrainOptions) -> None:
    """Write DIR/run.json, or refuse options that differ from the ones the run was started with. A stage
    that has not started yet may change (more or fewer steps, another gate); one that has, may not."""
    path = out / RUN_FILE
    mine = options_dict(opts)
    if path.is_file():
        saved = read_json(path)
        changed = sorted(k for k in mine if k not in (*RUN_CONTROLS, "stages") and saved.get(k) != mine[k])
        started = [k for k, s in enumerate(saved["stages"]) if stage_folder(out, k, s["name"]).exists()]
        if [saved["stages"][k] for k in started] != [mine["stages"][k] if k < len(mine["stages"]) else None
                                                    for k in started]:
            changed.append("stages (of stages already started)")
        if changed:
            raise ConfigError(f"{out}: the run there was started with other options ({', '.join(changed)}); use "
                              "the same options or another --out")
    write_json(path, mine)


def gate_line(stage, result: dict) -> str:
    relation = "<=" if stage.gate == "lm_perception" else ">="
    verdict = "passed" if result["passed"] else "MISSED"
    value = result["gate"]["value"]
    shown = "n/a" if value is None or math.isnan(value) else f"{value:.3f}"
    return f"stage {stage.name}: {stage.gate} = {shown} (target {relation} {stage.target}) {verdict}"


def run_pretrain(opts: PretrainOptions) -> dict:
    """Train the stages (continuing any checkpoints in opts.out) until done, `hours`, `stop_after` or a missed
    gate; returns where the run stands."""
    from trimpi.data.io import owned_output
    from trimpi.models.loading import default_device

    opts.check()
    with owned_output(opts.out, "trimpi pretrain micro-base") as out:  # locked; a folder of other files is refused
        check_same_options(out, opts)
        device = default_device() if opts.device == "auto" else torch.device(opts.device)
        return _run(opts, out, device)


def _run(opts: PretrainOptions, out: Path, device: torch.device) -> dict:
    from tqdm.auto import tqdm

    model, processor = build_model(opts)
    model.to(device)
    head = PerceptionHead(opts.arch.hidden, len(existence_labels())).to(device)
    start, done_here, stopped, resumed = time.monotonic(), 0, None, False
    summary: dict = {"stages": {}}
    last_finished = None
    for index, stage in enumerate(opts.stages):
        folder = stage_folder(out, index, stage.name)
        if (folder / DONE).is_file():
            result = read_json(folder / DONE)
            summary["stages"][stage.name] = result
            last_finished = folder
            if not result["passed"] and not opts.force:
                stopped = gate_line(stage, result) + "; rerun with --force to go on anyway"
                break
            continue
        if last_finished is not None:  # start from the weights the previous stage ended with
            state = load_state(last_finished / CHECKPOINT / STATE, device)
            model.load_state_dict(state["model"])
            head.load_state_dict(state["head"])
        trainer = StageTrainer(opts, index, model, processor, head, device, folder)
        resumed = trainer.load() or resumed
        bar = tqdm(total=stage.steps, initial=trainer.step, desc=f"stage {index + 1} {stage.name}", unit="step",
                   disable=not opts.progress)
        last_save, parts = time.monotonic(), {}
        while trainer.step < stage.steps:
            t0 = time.monotonic()
            parts = trainer.train_step()
            trainer.seconds += time.monotonic() - t0
            done_here += 1
            bar.update()
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()})
            now = time.monotonic()
            chunk_over = opts.hours is not None and now - start >= opts.hours * 3600
            stop = chunk_over or (opts.stop_after is not None and done_here >= opts.stop_after)
            due = now - last_save >= opts.save_minutes * 60 or (opts.save_steps and trainer.step % opts.save_steps == 0)
            if due or stop or trainer.step >= stage.steps:
                trainer.save()
                last_save = time.monotonic()
            if stop:
                break
        bar.close()
        trainer.close()
        if trainer.step < stage.steps:
            stopped = f"stage {stage.name}: step {trainer.step} of {stage.steps}; rerun the same command to continue"
            break
        if trainer.step == 0:
            trainer.save()
        result = finish_stage(opts, out, stage, trainer, parts)
        write_json(folder / DONE, json_safe(result))
        summary["stages"][stage.name] = result
        last_finished = folder
        if opts.progress:
            print(gate_line(stage, result) if "gate" in result else f"stage {stage.name}: done", flush=True)
        if not result["passed"] and not opts.force:
            stopped = gate_line(stage, result) + "; rerun with --force to go on anyway"
            break
    finished = all((stage_folder(out, k, s.name) / DONE).is_file() for k, s in enumerate(opts.stages))
    return {"finished": finished, "resumed": resumed, "stopped": stopped, "device": str(device), **summary}


def finish_stage(opts: PretrainOptions, out: Path, stage, trainer: StageTrainer, parts: dict) -> dict:
    """The stage's done.json: its gate measured now, its time and its last losses."""
    result = {"stage": stage.name, "steps": trainer.step, "seconds": round(trainer.seconds, 1),
              "dtype": trainer.dtype, "final_losses": parts, "passed": True}
    if stage.gate and trainer.step > 0:  # a stage of 0 steps changed nothing since the last measurement
        t0 = time.monotonic()
        measured = gates.measure(stage.gate, trainer.model, trainer.processor, trainer.head, opts, out,
                                 progress=opts.progress)
        value = measured["value"]
        result |= {"gate": measured, "target": stage.target, "gate_seconds": round(time.monotonic() - t0, 1),
                   "passed": not math.isnan(value) and gates.passed(stage.gate, value, stage.target)}
    return result


def json_safe(value):
    """NaN (a label with one class among the held-out scenes) written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def options_from_run(run: str | Path) -> PretrainOptions:
    """The options a run directory was started with."""
    path = Path(run) / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{run}: no pretraining run (run `trimpi pretrain micro-base --out {run}` first)")
    return options_from_dict(read_json(path))


def run_progress(run: str | Path) -> dict:
    """Where a run stands: per stage, its steps done and its gate result once finished."""
    opts = options_from_run(run)
    stages = []
    for index, stage in enumerate(opts.stages):
        folder = stage_folder(Path(run), index, stage.name)
        done = read_json(folder / DONE) if (folder / DONE).is_file() else None
        progress = read_progress(folder)
        stages.append({"stage": stage.name, "steps": stage.steps, "step": progress["step"] if progress else 0,
                       "done": done})
    return {"finished": all(s["done"] for s in stages), "stages": stages}


def export_run(run: str | Path, target: str | Path, measured: dict | None = None, allow_unfinished: bool = False):
    """Export a run's last checkpoint as the shipped base into `target` (bf16 safetensors, processor, card)."""
    from trimpi.models.shipped import export_base

    opts = options_from_run(run)
    progress = run_progress(run)
    if not progress["finished"] and not allow_unfinished:
        todo = next(s for s in progress["stages"] if not s["done"])
        raise ConfigError(f"{run}: stage {todo['stage']} is at step {todo['step']} of {todo['steps']}; finish the run "
                          "or pass --allow-unfinished")
    last = max((k for k, s in enumerate(progress["stages"]) if s["step"] or s["done"]), default=None)
    if last is None:
        raise ConfigError(f"{run}: no stage has a checkpoint yet")
    state = load_state(stage_folder(Path(run), last, opts.stages[last].name) / CHECKPOINT / STATE)
    model, processor = build_model(opts)
    model.load_state_dict(state["model"])
    stages = {s["stage"]: _stage_fact(s, opts.stages[k]) for k, s in enumerate(progress["stages"])}
    facts = {
        "name": "trimpi micro base",
        "summary": f"A {FAMILY_WORDS[opts.arch.family]} pretrained from scratch by trimpi in stages on generated "
                   "CLEVR perception items, random in-context ClevrPolicy policies and tool policies (never the "
                   "evaluation policies or images).",
        "architecture": dataclasses.asdict(opts.arch) | {"image_tokens": opts.arch.image_tokens,
                                                         "parameters": sum(p.numel() for p in model.parameters())},
        "stages": stages,
        "training": {"seed": opts.seed, "train_hours": round(sum(s["done"]["seconds"] for s in progress["stages"]
                                                               if s["done"]) / 3600, 3),
                     "exclude": ", ".join(opts.exclude) or "none", "gates_forced": opts.force},
        "machine": machine(),
        "command": f"trimpi pretrain micro-base --out {run} --seed {opts.seed}  "
                   f"(then: trimpi pretrain export --run {run} --to src/trimpi/models/base)",
        "measured": measured or "not yet measured (see benchmarks/RESULTS.md)",
    }
    return export_base(model, processor, target, facts)


def _stage_fact(progress: dict, stage) -> str:
    done = progress["done"]
    if not done:
        return f"unfinished: step {progress['step']} of {progress['steps']}"
    text = f"{done['steps']} steps, {done['seconds'] / 60:.1f} min, trains {stage.trains}"
    if "gate" in done:
        value = done["gate"]["value"]
        text += f"; {stage.gate} {'n/a' if value is None else f'{value:.3f}'} (target {stage.target}, " \
                f"{'passed' if done['passed'] else 'missed'})"
    return text


def prepare_corpus(opts: PretrainOptions, shards: int, workers: int, progress: bool = True) -> int:
    """Write the first `shards` corpus shards of every stage with `workers` processes (e.g. before a GPU
    run, whose steps outpace one data process); returns how many were written now."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from trimpi.data.pretrain.corpus import Corpus, write_shard
    from trimpi.train.pretrain.trainer import corpus_config

    jobs = []
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for index, stage in enumerate(opts.stages):
            folder = stage_folder(Path(opts.out), index, stage.name)
            corpus = Corpus(folder / "corpus", corpus_config(opts, stage, index))
            needed = min(shards, -(-stage.steps * stage.batch_size // opts.shard_size))
            jobs += [pool.submit(write_shard, str(corpus.root), corpus.cfg, k) for k in range(needed)
                     if not (corpus.shard_dir(k) / "items.jsonl").is_file()]
        for job in tqdm(as_completed(jobs), total=len(jobs), desc="corpus shards", disable=not progress):
            job.result()
    return len(jobs)


def pack_finished(run: str | Path, to: str | Path) -> list[str]:
    """Copy a run's finished stages, weights only (model and head, fp32: exact), into `to`: a run directory
    that `trimpi pretrain micro-base --out` continues from the next stage (to carry a run to another
    machine without its optimizer state). Returns the stages packed."""
    import shutil

    run, to = Path(run), Path(to)
    opts = options_from_run(run)
    packed = []
    for index, stage in enumerate(opts.stages):
        folder = stage_folder(run, index, stage.name)
        if not (folder / DONE).is_file():
            break
        target = stage_folder(to, index, stage.name) / CHECKPOINT
        target.mkdir(parents=True, exist_ok=True)
        state = load_state(folder / CHECKPOINT / STATE)
        torch.save({k: state[k] for k in ("model", "head", "step", "seconds", "dtype")}, target / STATE)
        write_json(target / "progress.json", read_progress(folder))
        shutil.copyfile(folder / DONE, target.parent / DONE)
        packed.append(stage.name)
    if not packed:
        raise ConfigError(f"{run}: no finished stage to pack")
    shutil.copyfile(run / RUN_FILE, to / RUN_FILE)
    mark_owned(to, "trimpi pretrain pack")
    return packed
