"""The standing hostile-input suite: what a downloaded dataset, recipe or run folder (or a careless command
line) may try, one parameterized case each. Every case must end with exit status != 0 and one line
naming the problem; nothing is written outside --out, no file is lost or changed, and no code runs (a
module the attack names would create a sentinel file when imported).

Cases run `trimpi.cli.main` in this process (fast), except those that need a fresh interpreter (`python -m
trimpi` in an attacker's folder, a lock held by another process). The count of cases is printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

REPO_SRC = str(Path(__file__).resolve().parents[1] / "src")
SENTINEL = "PWNED"


@dataclass
class Case:
    args: list[str]
    expect: str  # regex the one error line must match
    cwd: Path | None = None
    out: Path | None = None  # the command's --out: the one place it may write
    fresh: bool = False  # run `python -m trimpi` in a new interpreter
    env: dict[str, str] = field(default_factory=dict)
    holder: Path | None = None  # hold this directory's --out lock from another process while the case runs


def write_png(path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def evil_module(folder: Path, name: str, sentinel: Path) -> None:
    """A module that leaves the sentinel when imported (what an attacker ships beside the data)."""
    (folder / f"{name}.py").write_text(f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('ran')\n"
                                       "def score(completion, record):\n    return 1.0\n")


def source(tmp: Path, rows: list[dict] | None = None, name: str = "ds") -> Path:
    """An examples folder: policy.md, a photo, examples.jsonl, and an attacker's evilmod.py."""
    ds = tmp / name
    write_png(ds / "photo.png")
    (ds / "policy.md").write_text("# Policy\nApprove small items.\n")
    rows = rows or [{"id": f"r{i}", "query": f"item {i}?", "answer": "approve", "images": ["photo.png"]}
                    for i in range(4)]
    (ds / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    evil_module(ds, "evilmod", tmp / SENTINEL)
    return ds


def import_args(ds: Path, out: Path, *extra: str) -> list[str]:
    return ["data", "import", "--out", str(out), "--policy", str(ds / "policy.md"),
            "--examples", str(ds / "examples.jsonl"), *extra]


def row(**kw) -> list[dict]:
    base = {"id": "r0", "query": "item?", "answer": "approve", "images": ["photo.png"]}
    return [{**base, **kw}, {**base, "id": "r1"}, {**base, "id": "r2"}]


def user_folder(tmp: Path, name: str = "notes") -> Path:
    """A folder of the user's own files that no trimpi command wrote."""
    folder = tmp / name
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}\n')
    (folder / "thesis.txt").write_text("years of work\n")
    return folder


def owned(folder: Path) -> Path:
    """A folder a trimpi command wrote (its mark), holding more files."""
    from trimpi.data.io import mark_owned

    folder.mkdir(parents=True, exist_ok=True)
    mark_owned(folder, "data import")
    (folder / "train.jsonl").write_text("")
    return folder


def model_dir(tmp: Path, name: str = "model", mark: bool = False) -> Path:
    folder = tmp / name
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "idefics3"}\n')
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    if mark:
        from trimpi.data.io import mark_owned
        from trimpi.train.stage import mark_finished

        mark_owned(folder, "train sft")
        mark_finished(folder, {"stage": "sft", "global_step": 1})
    return folder


def dataset_dir(tmp: Path, **record) -> Path:
    """A dataset directory as trimpi writes it (test/train split files, one policy), with `record` fields."""
    d = tmp / "data"
    write_png(d / "images" / "a.png")
    (d / "policies").mkdir(parents=True)
    (d / "policies" / "p.json").write_text(json.dumps({"name": "p", "text": "Approve.", "images": []}))
    rec = {"id": "t0", "task": "custom", "split": "test", "policy": "p", "policy_path": "policies/p.json",
           "images": ["images/a.png"], "query": "ok?", "answer": "yes", "response": "\\boxed{yes}", **record}
    for split in ("train", "test"):
        (d / f"{split}.jsonl").write_text(json.dumps({**rec, "split": split}) + "\n")
    return d


# ---- the cases: name -> builder(tmp) -> Case ----------------------------------------------------------

def code_from_row_under_python_m(tmp):
    ds = source(tmp, row(answer_type="evilmod:score"))
    return Case(import_args(ds, tmp / "out"), r"field 'answer_type'.*evilmod:score.*--trust-code", cwd=ds,
                out=tmp / "out", fresh=True)


def code_from_row_installed_module(tmp):
    ds = source(tmp, row(answer_type="this:x"))
    return Case(import_args(ds, tmp / "out"), r"'this:x' is Python code", out=tmp / "out")


def code_from_row_on_pythonpath(tmp):
    ds = source(tmp, row(answer_type="evilmod:score"))
    return Case(import_args(ds, tmp / "out"), r"evilmod:score.*--trust-code evilmod:score", out=tmp / "out",
                fresh=True, env={"PYTHONPATH": f"{REPO_SRC}{os.pathsep}{ds}"})


def code_from_cli_answer_type_without_trust(tmp):
    ds = source(tmp)
    return Case(import_args(ds, tmp / "out", "--answer-type", "evilmod:score"), r"--trust-code evilmod:score",
                out=tmp / "out", fresh=True, env={"PYTHONPATH": f"{REPO_SRC}{os.pathsep}{ds}"})


def code_trusted_other_name(tmp):
    ds = source(tmp, row(answer_type="evilmod:score"))
    return Case(import_args(ds, tmp / "out", "--trust-code", "mymod:fn"), r"--trust-code evilmod:score",
                out=tmp / "out", fresh=True, env={"PYTHONPATH": f"{REPO_SRC}{os.pathsep}{ds}"})


def code_from_dataset_at_eval(tmp):
    d = dataset_dir(tmp, answer_type="evilmod:score")
    evil_module(d, "evilmod", tmp / SENTINEL)
    return Case(["eval", "--model", "micro", "--data", str(d), "--out", str(tmp / "ev")],
                r"test.jsonl:1: field 'answer_type':.*evilmod:score", out=tmp / "ev", cwd=d, fresh=True)


def code_from_dataset_at_rl(tmp):
    d = dataset_dir(tmp, answer_type="evilmod:score")
    evil_module(d, "evilmod", tmp / SENTINEL)
    return Case(["train", "rl", "--data", str(d), "--model", "micro", "--out", str(tmp / "rl")],
                r"record t0: field 'answer_type':.*evilmod:score", out=tmp / "rl", cwd=d, fresh=True)


def code_from_reward_flag_without_trust(tmp):
    d = dataset_dir(tmp)
    evil_module(d, "evilmod", tmp / SENTINEL)
    return Case(["train", "rl", "--data", str(d), "--model", "micro", "--out", str(tmp / "rl"), "--reward",
                 "evilmod:score"], r"reward 'evilmod:score' is Python code", out=tmp / "rl", cwd=d, fresh=True)


def image_absolute_path(tmp):
    secret = write_png(tmp / "private" / "me.png")
    ds = source(tmp, row(images=[str(secret)]))
    return Case(import_args(ds, tmp / "out"), r"examples.jsonl:1: field 'images': .*an absolute path",
                out=tmp / "out")


def image_dotdot_escape(tmp):
    write_png(tmp / "private" / "me.png")
    ds = source(tmp, row(images=["../private/me.png"]))
    return Case(import_args(ds, tmp / "out"), r"examples.jsonl:1: field 'images': '\.\./private/me.png' leads "
                r"outside .*'\.\.'", out=tmp / "out")


def image_symlink_out(tmp):
    secret = write_png(tmp / "private" / "me.png")
    ds = source(tmp, row(images=["link.png"]))
    (ds / "link.png").symlink_to(secret)
    return Case(import_args(ds, tmp / "out"), r"field 'images': 'link.png' leads outside .*symbolic link",
                out=tmp / "out")


def scene_absolute_json(tmp):
    secret = tmp / "home" / ".docker" / "config.json"
    secret.parent.mkdir(parents=True)
    secret.write_text('{"auths": {"registry": {"auth": "c2VjcmV0"}}}')
    ds = source(tmp, row(scene=str(secret)))
    return Case(import_args(ds, tmp / "out"), r"examples.jsonl:1: field 'scene': .*leads outside", out=tmp / "out")


def scene_dotdot_json(tmp):
    (tmp / "secret.json").write_text('{"token": "abc"}')
    ds = source(tmp, row(scene="../secret.json"))
    return Case(import_args(ds, tmp / "out"), r"field 'scene': '\.\./secret.json' leads outside", out=tmp / "out")


def policy_image_escape(tmp):
    write_png(tmp / "private" / "me.png")
    ds = source(tmp)
    (ds / "policy.md").write_text("# Policy\nLike this: ![x](../private/me.png)\n")
    return Case(import_args(ds, tmp / "out"), r"policy.md.*image: '\.\./private/me.png' leads outside",
                out=tmp / "out")


def decompression_bomb_png(tmp):
    ds = source(tmp, row(images=["bomb.png"]))
    Image.new("1", (20000, 20000)).save(ds / "bomb.png")  # 400 M pixels: over PIL's bomb limit
    return Case(import_args(ds, tmp / "out"), r"field 'images': bomb.png is not a readable image", out=tmp / "out")


def overwrite_working_directory(tmp):
    ds = source(tmp)
    here = owned(tmp / "work")
    return Case(import_args(ds, Path("."), "--overwrite"), r"working directory or a parent", cwd=here, out=None)


def overwrite_parent_of_working_directory(tmp):
    ds = source(tmp)
    parent = owned(tmp / "proj")
    (parent / "sub").mkdir()
    return Case(import_args(ds, parent, "--overwrite"), r"working directory or a parent", cwd=parent / "sub")


def overwrite_own_inputs(tmp):
    out = owned(tmp / "D")
    ds = source(out, name="src")
    return Case(import_args(ds, out, "--overwrite"), r"holds .*examples.jsonl, an input of this command")


def overwrite_foreign_folder_import(tmp):
    ds = source(tmp)
    notes = user_folder(tmp)
    return Case(import_args(ds, notes, "--overwrite"), r"not empty and not written by trimpi")


def overwrite_foreign_folder_clevr(tmp):
    notes = user_folder(tmp)
    return Case(["data", "clevr", "--out", str(notes), "--overwrite", "--policies", "1"],
                r"not empty and not written by trimpi")


def overwrite_foreign_folder_gta(tmp):
    notes = user_folder(tmp)
    return Case(["data", "gta", "--out", str(notes), "--overwrite"], r"not empty and not written by trimpi")


def sft_out_is_its_model(tmp):
    m = model_dir(tmp, mark=True)
    d = dataset_dir(tmp)
    return Case(["train", "sft", "--data", str(d), "--model", str(m), "--out", str(m), "--overwrite"],
                r"holds .*model, an input of this command \(--model\)")


def cpt_out_is_its_model(tmp):
    m = model_dir(tmp)
    d = dataset_dir(tmp)
    return Case(["train", "cpt", "--data", str(d), "--model", str(m), "--out", str(m), "--overwrite"],
                r"an input of this command \(--model\)")


def rl_out_is_its_model(tmp):
    m = model_dir(tmp)
    d = dataset_dir(tmp)
    return Case(["train", "rl", "--data", str(d), "--model", str(m), "--out", str(m), "--overwrite"],
                r"an input of this command \(--model\)")


def sft_into_user_folder(tmp):
    notes = user_folder(tmp)
    return Case(["train", "sft", "--data", str(dataset_dir(tmp)), "--model", "micro", "--out", str(notes)],
                r"not empty and not written by trimpi")


def warmup_into_user_folder(tmp):
    notes = user_folder(tmp)
    return Case(["train", "warmup", "--data", str(dataset_dir(tmp)), "--out", str(notes)],
                r"not empty and not written by trimpi")


def rl_into_user_folder(tmp):
    notes = user_folder(tmp)
    return Case(["train", "rl", "--data", str(dataset_dir(tmp)), "--model", "micro", "--out", str(notes)],
                r"not empty and not written by trimpi")


def eval_into_user_folder(tmp):
    notes = user_folder(tmp)
    return Case(["eval", "--model", "micro", "--data", str(dataset_dir(tmp)), "--out", str(notes)],
                r"not empty and not written by trimpi")


def eval_out_is_its_model(tmp):
    m = model_dir(tmp)  # a downloaded model: not trimpi's output
    return Case(["eval", "--model", str(m), "--data", str(dataset_dir(tmp)), "--out", str(m)],
                r"not empty and not written by trimpi")


def _locked(cmd: list[str]) -> Callable:
    def build(tmp):
        out = tmp / "busy"
        d = dataset_dir(tmp)
        args = [a.replace("DATA", str(d)).replace("OUT", str(out)) for a in cmd]
        return Case(args, r"in use by another trimpi process \(pid \d+\)", holder=out, fresh=True)
    return build


def key_over_plain_http(tmp):
    d = dataset_dir(tmp, answer_type="judge")
    return Case(["train", "rl", "--data", str(d), "--model", "micro", "--out", str(tmp / "rl"), "--judge",
                 "http://judge.example.com/v1", "--api-key-env", "MY_JUDGE_KEY"],
                r"refusing to send \$MY_JUDGE_KEY over plain http:// to another host", out=tmp / "rl",
                env={"MY_JUDGE_KEY": "s3cret"})


def key_variable_unset(tmp):
    d = dataset_dir(tmp, answer_type="judge")
    return Case(["train", "rl", "--data", str(d), "--model", "micro", "--out", str(tmp / "rl"), "--judge",
                 "https://judge.example.com/v1", "--api-key-env", "NOT_SET_ANYWHERE"],
                r"\$NOT_SET_ANYWHERE \(--api-key-env\) is not set", out=tmp / "rl")


def eval_key_over_plain_http(tmp):
    d = dataset_dir(tmp, answer_type="judge")
    return Case(["eval", "--model", "micro", "--data", str(d), "--out", str(tmp / "ev"), "--judge",
                 "http://judge.example.com/v1", "--api-key-env", "AWS_SECRET_ACCESS_KEY"],
                r"refusing to send \$AWS_SECRET_ACCESS_KEY over plain http://", out=tmp / "ev",
                env={"AWS_SECRET_ACCESS_KEY": "s3cret"})


def recipe_names_code_in_data(tmp):
    d = dataset_dir(tmp, answer_type="evilmod:score")
    evil_module(d, "evilmod", tmp / SENTINEL)
    recipe = tmp / "recipe.yaml"
    recipe.write_text(f"name: r\nmodel: micro\ndata: {{path: {d}}}\nmethods: [in_context]\n"
                      "eval: {protocols: [accuracy]}\n")
    return Case(["run", str(recipe), "--out", str(tmp / "run")], r"answer type 'evilmod:score' is Python code",
                out=tmp / "run", cwd=d, fresh=True)


def _train_flags(cmd: str, *flags: str, expect: str) -> Callable:
    def build(tmp):
        d = dataset_dir(tmp)
        model = [] if cmd == "warmup" else ["--model", "micro"]
        return Case(["train", cmd, "--data", str(d), *model, "--out", str(tmp / "o"), *flags], expect, out=tmp / "o")
    return build


def integer_answer_in_train_jsonl(tmp):
    d = dataset_dir(tmp, answer=3)
    return Case(["train", "sft", "--data", str(d), "--model", "micro", "--out", str(tmp / "o"), "--target", "answer"],
                r"train.jsonl:1: field 'answer' must be text, got 3", out=tmp / "o")


def null_response_in_train_jsonl(tmp):
    d = dataset_dir(tmp, response=None)
    return Case(["train", "sft", "--data", str(d), "--model", "micro", "--out", str(tmp / "o"), "--target", "answer"],
                r"train.jsonl:1: field 'response' must be text, got null", out=tmp / "o")


def choice_answer_outside_options(tmp):
    ds = source(tmp, row(answer="HLOD"))
    kind = '{"type": "choice", "options": ["HOLD", "SPLIT", "TAG-RED", "SHIP"]}'
    return Case(import_args(ds, tmp / "out", "--answer-type", kind),
                r"examples.jsonl:1: field 'answer': 'HLOD' is not one of the options", out=tmp / "out")


def recipe_key_misspelled(tmp):
    recipe = tmp / "r.yaml"
    recipe.write_text("name: r\nmodle: micro\ndata: {path: d}\nmethods: [in_context]\n")
    return Case(["run", str(recipe), "--dry-run"], r"modle: unknown key \(did you mean 'model'\?\)")


def dataset_absolute_image_at_eval(tmp):
    secret = write_png(tmp / "private" / "me.png")
    d = dataset_dir(tmp, images=[str(secret)])
    return Case(["eval", "--model", "micro", "--data", str(d), "--out", str(tmp / "ev")],
                r"test.jsonl:1: field 'images': .* is an absolute path", out=tmp / "ev")


def dataset_absolute_scene_at_train(tmp):
    d = dataset_dir(tmp, scene="/etc/passwd")
    return Case(["train", "sft", "--data", str(d), "--model", "micro", "--out", str(tmp / "o"), "--target", "answer"],
                r"train.jsonl:1: field 'scene': '/etc/passwd' is an absolute path", out=tmp / "o")


def teacher_gets_only_images(tmp):
    (tmp / "secret.txt").write_text("AWS_SECRET_ACCESS_KEY=abc\n")
    d = dataset_dir(tmp, images=["images/leak.png"])
    (d / "images" / "leak.png").symlink_to(tmp / "secret.txt")  # a link the dataset ships, pointing out
    return Case(["data", "cot", "--data", str(d), "--teacher", "http://127.0.0.1:9/v1", "--out",
                 str(tmp / "cot" / "t.jsonl"), "--no-progress"], r"leak.png: not sent to the endpoint: not a readable "
                r"image", out=tmp / "cot")


CASES: dict[str, Callable] = {f.__name__: f for f in [
    dataset_absolute_image_at_eval, dataset_absolute_scene_at_train, teacher_gets_only_images,
    integer_answer_in_train_jsonl, null_response_in_train_jsonl, choice_answer_outside_options,
    recipe_key_misspelled,
    code_from_row_under_python_m, code_from_row_installed_module, code_from_row_on_pythonpath,
    code_from_cli_answer_type_without_trust, code_trusted_other_name, code_from_dataset_at_eval,
    code_from_dataset_at_rl, code_from_reward_flag_without_trust, recipe_names_code_in_data,
    image_absolute_path, image_dotdot_escape, image_symlink_out, scene_absolute_json, scene_dotdot_json,
    policy_image_escape, decompression_bomb_png,
    overwrite_working_directory, overwrite_parent_of_working_directory, overwrite_own_inputs,
    overwrite_foreign_folder_import, overwrite_foreign_folder_clevr, overwrite_foreign_folder_gta,
    sft_out_is_its_model, cpt_out_is_its_model, rl_out_is_its_model, eval_out_is_its_model,
    sft_into_user_folder, warmup_into_user_folder, rl_into_user_folder, eval_into_user_folder,
    key_over_plain_http, key_variable_unset, eval_key_over_plain_http,
]}
CASES.update({
    "lock_train_sft": _locked(["train", "sft", "--data", "DATA", "--model", "micro", "--out", "OUT"]),
    "lock_train_cpt": _locked(["train", "cpt", "--data", "DATA", "--model", "micro", "--out", "OUT"]),
    "lock_train_rl": _locked(["train", "rl", "--data", "DATA", "--model", "micro", "--out", "OUT"]),
    "lock_eval": _locked(["eval", "--model", "micro", "--data", "DATA", "--out", "OUT"]),
    "lock_import": _locked(["data", "gta", "--out", "OUT"]),
    "sft_limit_zero": _train_flags("sft", "--limit", "0", expect=r"--limit: must be at least 1, got 0"),
    "sft_limit_negative": _train_flags("sft", "--limit", "-3", expect=r"--limit: must be at least 1, got -3"),
    "sft_max_steps_zero": _train_flags("sft", "--max-steps", "0", expect=r"--max-steps: must be at least 1"),
    "cpt_max_steps_negative": _train_flags("cpt", "--max-steps", "-5", expect=r"--max-steps: .* got -5"),
    "sft_batch_size_zero": _train_flags("sft", "--batch-size", "0", expect=r"--batch-size: must be at least 1"),
    "warmup_max_steps_zero": _train_flags("warmup", "--max-steps", "0", expect=r"--max-steps: must be at least 1"),
    "rl_max_steps_negative": _train_flags("rl", "--max-steps", "-5", expect=r"--max-steps: .* got -5"),
})
TRIED: list[str] = []


def snapshot(root: Path, skip: Path | None) -> dict[str, str]:
    """Every path under `root` (but `skip`) with its content hash, link target or 'dir'."""
    found = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_in_process(case: Case, monkeypatch, capfd) -> tuple[int, str, str]:
    from trimpi.cli import main

    monkeypatch.chdir(case.cwd or Path.cwd())
    monkeypatch.setattr(sys, "argv", ["trimpi", *case.args])
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        signal.signal(signal.SIGTERM, handler)
    out, err = capfd.readouterr()
    return info.value.code, out, err


def hold_lock(out: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from trimpi.data.io import exclusive
        with exclusive({str(out)!r}):
            print("held", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": REPO_SRC},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def run_fresh(case: Case) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": REPO_SRC, "HF_HUB_OFFLINE": "1", **case.env}
    env.pop("TRIMPI_TRUST_CODE", None)
    proc = subprocess.run([sys.executable, "-m", "trimpi", *case.args], cwd=case.cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_safely(name, tmp_path, monkeypatch, capfd):
    case = CASES[name](tmp_path)
    before = snapshot(tmp_path, case.out)
    holder = hold_lock(case.holder) if case.holder is not None else None
    try:
        code, out, err = run_fresh(case) if case.fresh else run_in_process(case, monkeypatch, capfd)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    TRIED.append(name)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code not in (0, None), f"{name}: exit 0\n{out}\n{err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: not one error line:\n{err}"
    assert re.search(case.expect, lines[0]), f"{name}: {lines[0]!r} does not match {case.expect!r}"
    assert not (tmp_path / SENTINEL).exists(), f"{name}: the attacker's code ran"
    assert "Beautiful is better than ugly" not in out + err, f"{name}: an installed module named by data was imported"
    after = snapshot(tmp_path, case.out)
    if case.holder is not None:  # the holder's lock file may go with it
        after = {k: v for k, v in after.items() if not k.endswith(".lock")}
        before = {k: v for k, v in before.items() if not k.endswith(".lock")}
    assert after == before, f"{name}: files outside --out changed: {set(after) ^ set(before)}"


def test_hostile_suite_size():
    """The suite's size, printed (`pytest -s` shows it): a case dropped by mistake shows here."""
    print(f"hostile-input cases: {len(CASES)} defined, {len(TRIED)} tried in this session")
    assert len(CASES) >= 45
