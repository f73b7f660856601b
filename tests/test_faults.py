"""Faults a new user hit (Ctrl-C, concurrent builds, empty or broken inputs, permissions), one test each."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY_CLEVR = ["--policies", "1", "--cot", "0", "--general", "0", "--image-size", "64x48", "--workers", "2"]


def trimpi(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO_SRC, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "trimpi", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def wait_for(predicate, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def partials(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".partial-" in p.name]


def finish(proc: subprocess.Popen, timeout: float = 60.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("the command hung") from None
    return proc.returncode, err


@pytest.mark.parametrize("phase,scenes", [("sampling", "3000"), ("rendering", "200")])
def test_fault1_ctrl_c_exits_130_and_leaves_nothing(tmp_path, phase, scenes):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while workers sample or render."""
    out = tmp_path / "data"
    proc = trimpi("data", "clevr", "--out", str(out), "--train-per-policy", scenes, "--test", "20", *TINY_CLEVR)
    wait_for(lambda: partials(tmp_path), proc=proc)
    if phase == "sampling":
        time.sleep(1.0)
    else:
        wait_for(lambda: any(partials(tmp_path)[0].glob("pool/images/*.png")), proc=proc)
    assert proc.poll() is None, "the build finished before the signal: make it bigger"
    os.killpg(proc.pid, signal.SIGINT)
    code, err = finish(proc)
    assert code == 130
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_fault1_ctrl_c_exit_status_reaches_the_shell(monkeypatch):
    """typer turns KeyboardInterrupt into a returned 130 under standalone_mode=False; main must not drop it."""
    import typer

    from trimpi import cli

    def interrupted():
        raise KeyboardInterrupt

    app = typer.Typer()
    app.command()(interrupted)
    monkeypatch.setattr(cli, "app", app)
    monkeypatch.setattr(sys, "argv", ["trimpi"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 130


# --- fault 3: two builds on one --out -------------------------------------------------------------------------


def test_fault3_second_data_build_on_same_out_fails_naming_pid(tmp_path):
    out = tmp_path / "data"
    first = trimpi("data", "clevr", "--out", str(out), "--train-per-policy", "3000", "--test", "20", *TINY_CLEVR)
    try:
        wait_for(lambda: partials(tmp_path), proc=first)
        for cmd in (["clevr", *TINY_CLEVR, "--train-per-policy", "2", "--test", "2"], ["gta"]):
            second = trimpi("data", *cmd, "--out", str(out))
            code, err = finish(second)
            assert code == 2 and err.strip().splitlines() == [
                f"error: {out}: in use by another trimpi process (pid {first.pid}); wait for it to finish or stop it"]
        assert first.poll() is None and len(partials(tmp_path)) == 1  # the first build goes on, untouched
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


# --- fault 4: empty inputs and null fields ----------------------------------------------------------------------


def gta_release(root: Path, items: dict) -> Path:
    from test_gta_loader import make_release

    return make_release(root, items)


def test_fault4_empty_gta_dataset_is_an_error(tmp_path):
    from trimpi.data.gta.build import build_gta
    from trimpi.errors import DataError

    release = gta_release(tmp_path / "gta", {})
    with pytest.raises(DataError, match=r"dataset\.json: no items"):
        build_gta(out=tmp_path / "out", gta_dir=release)
    assert not (tmp_path / "out").exists()


def test_fault4_gta_dataset_without_two_tool_queries_is_an_error(tmp_path):
    from test_gta_loader import _item
    from trimpi.data.gta.build import build_gta
    from trimpi.errors import DataError

    release = gta_release(tmp_path / "gta", {"0": _item()})
    with pytest.raises(DataError, match="1 queries with a reference tool call; at least 2 are needed"):
        build_gta(out=tmp_path / "out", gta_dir=release)


def test_fault4_null_user_content_is_a_one_line_error(tmp_path):
    from test_gta_loader import _item

    item = _item()
    item["dialogs"][0]["content"] = None
    release = gta_release(tmp_path / "gta", {"7": item, "8": _item()})
    proc = trimpi("data", "gta", "--out", str(tmp_path / "out"), "--gta-dir", str(release))
    code, err = finish(proc)
    expected = (f"error: {release / 'dataset.json'}: item '7' field dialogs[0].content: expected the user's query "
                "as text, got null")
    assert code == 2 and err.strip().splitlines() == [expected]


def write_split(dataset: Path, name: str, rows: list[dict]) -> None:
    (dataset / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def clevr_ds(tmp_path_factory) -> Path:
    from test_eval_fixtures import make_clevr

    return make_clevr(tmp_path_factory.mktemp("faults_clevr"))


def copy_dataset(ds: Path, tmp_path: Path) -> Path:
    """A copy of a ClevrPolicy setting with its image pool, to break."""
    shutil.copytree(ds.parent, tmp_path / "clevr")
    return tmp_path / "clevr" / ds.name


class CountingEngine:
    """A generation engine that only counts: evaluation must fail before calling it."""

    calls = 0

    def generate(self, *a, **k):
        CountingEngine.calls += 1
        raise AssertionError("generation started on invalid input")


def eval_on(dataset: Path, out: Path, protocols=("accuracy",)):
    from trimpi.eval import EvalOptions, Subject, evaluate_model

    subject = Subject(processor=None, engine=CountingEngine())
    return evaluate_model(subject, dataset, out, EvalOptions(protocols=list(protocols), progress=False))


def test_fault4_eval_on_empty_test_split_is_an_error(clevr_ds, tmp_path):
    from trimpi.errors import DataError

    ds = copy_dataset(clevr_ds, tmp_path)
    write_split(ds, "test.jsonl", [])
    with pytest.raises(DataError, match=r"test\.jsonl: no records"):
        eval_on(ds, tmp_path / "eval")
    assert CountingEngine.calls == 0 and not (tmp_path / "eval").exists()


# --- fault 6: tracebacks ----------------------------------------------------------------------------------------


def test_fault6_null_answer_fails_before_generating_naming_file_row_field(clevr_ds, tmp_path):
    from trimpi.errors import DataError

    ds = copy_dataset(clevr_ds, tmp_path)
    rows = [json.loads(line) for line in (ds / "test.jsonl").read_text().splitlines()]
    rows[2]["answer"] = None
    write_split(ds, "test.jsonl", rows)
    with pytest.raises(DataError) as e:
        eval_on(ds, tmp_path / "eval")
    assert str(e.value) == f"{ds / 'test.jsonl'}:3: field 'answer' must be text, got null"
    assert CountingEngine.calls == 0 and not (tmp_path / "eval").exists()
    proc = trimpi("eval", "--model", "micro", "--data", str(ds), "--out", str(tmp_path / "cli"))
    code, err = finish(proc)
    assert code == 2 and err.strip().splitlines() == [f"error: {e.value}"]


def test_fault6_unwritable_out_is_one_line_before_any_work(clevr_ds, tmp_path):
    """/sys refuses new files even to root (os.access says yes there, so the check must try)."""
    from trimpi.errors import TrimpiError

    with pytest.raises(TrimpiError, match=r"^/sys/trimpi-eval: cannot write in /sys \(Permission denied\)$"):
        eval_on(clevr_ds, Path("/sys/trimpi-eval"))
    assert CountingEngine.calls == 0
    for cmd in (["eval", "--model", "micro", "--data", str(clevr_ds)], ["data", "gta"]):
        code, err = finish(trimpi(*cmd, "--out", "/sys/trimpi-out"))
        assert code == 2 and err.strip().splitlines() == [
            "error: /sys/trimpi-out: cannot write in /sys (Permission denied)"], err


def test_fault6_write_error_is_one_line(tmp_path):
    from trimpi.data.io import write_json
    from trimpi.errors import TrimpiError

    with pytest.raises(TrimpiError, match=r"^/sys/x\.json: cannot write \(Permission denied\)$"):
        write_json("/sys/x.json", {})


# --- fault 5: broken images in an imported release ----------------------------------------------------------------


BROKEN = {"text": b"this is not a picture\n", "empty": b""}


@pytest.mark.parametrize("kind", ["text", "empty"])
def test_fault5_broken_gta_image_fails_the_build(tmp_path, kind):
    from test_gta_loader import _item
    from trimpi.data.gta.build import build_gta
    from trimpi.errors import DataError

    release = gta_release(tmp_path / "gta", {"0": _item(), "1": _item()})
    (release / "image/a.jpg").write_bytes(BROKEN[kind])
    reason = "not an image file" if kind == "text" else "empty file"
    with pytest.raises(DataError, match=rf"item '0' field files\[0\]\.path: image image/a\.jpg cannot be decoded "
                                        rf"\({reason}\)$"):
        build_gta(out=tmp_path / "out", gta_dir=release)
    assert not (tmp_path / "out").exists()


def clevr_release(root: Path, built: Path) -> Path:
    from test_clevr_build import make_release

    return make_release(root, built)


@pytest.fixture(scope="module")
def small_clevr(tmp_path_factory) -> Path:
    from trimpi.data.clevr.build import ClevrConfig, build_clevr

    out = tmp_path_factory.mktemp("faults_small") / "data"
    build_clevr(ClevrConfig(depths=[2], policies=2, train_per_policy=3, test=3, cot=1, general=1, width=32, height=24,
                            workers=1), out, progress=False)
    return out


@pytest.mark.parametrize("kind", ["text", "empty"])
def test_fault5_broken_clevr_image_fails_the_build(tmp_path, small_clevr, kind):
    from trimpi.data.clevr.build import ClevrConfig, build_clevr
    from trimpi.errors import DataError

    release = clevr_release(tmp_path / "CLEVR", small_clevr)
    victim = sorted((release / "images" / "val").iterdir())[1]
    victim.write_bytes(BROKEN[kind])
    cfg = ClevrConfig(depths=[2], policies=2, train_per_policy=3, test=3, cot=1, general=1, clevr_dir=str(release))
    with pytest.raises(DataError, match=rf"image {victim} cannot be decoded"):
        build_clevr(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not partials(tmp_path)


# --- fault 8: the smaller ones ---------------------------------------------------------------------------------


def test_fault8_sigkilled_build_leaves_partial_that_next_build_removes(tmp_path):
    out = tmp_path / "data"
    proc = trimpi("data", "clevr", "--out", str(out), "--train-per-policy", "3000", "--test", "20", *TINY_CLEVR)
    wait_for(lambda: partials(tmp_path), proc=proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (left,) = partials(tmp_path)
    assert left.name.startswith(f".data.partial-{proc.pid}-")
    code, err = finish(trimpi("data", "clevr", "--out", str(out), "--train-per-policy", "2", "--test", "2",
                              *TINY_CLEVR))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_fault8_live_builds_partial_is_kept(tmp_path):
    """Only the stage of a dead process is stale: a live one's (another user's tool, say) stays."""
    from trimpi.data.io import stale_stages

    out = tmp_path / "data"
    mine = tmp_path / f".data.partial-{os.getpid()}-abcd"
    mine.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = tmp_path / f".data.partial-{dead.pid}-abcd"
    gone.mkdir()
    old = tmp_path / f".data.old-{dead.pid}-efgh"
    old.mkdir()
    assert stale_stages(out) == sorted([gone, old])


def modes(root: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"dirs": set(), "files": set()}
    for p in [root, *root.rglob("*")]:
        found["dirs" if p.is_dir() else "files"].add(oct(p.stat().st_mode & 0o777))
    return found


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, "0o644", "0o755"), (0o077, "0o600", "0o700")])
def test_fault8_outputs_honour_the_umask(tmp_path, umask, file_mode, dir_mode):
    from test_gta_loader import _item
    from trimpi.data.clevr.build import ClevrConfig, build_clevr
    from trimpi.data.gta.build import build_gta
    from trimpi.data.io import staged_directory, write_json
    from trimpi.models.loading import save_checkpoint
    from trimpi.models.tiny import build_tiny

    release = gta_release(tmp_path / "gta", {"0": _item(), "1": _item()})
    model, processor = build_tiny("qwen2_5_vl")
    old = os.umask(umask)
    try:
        build_clevr(ClevrConfig(depths=[2], variant="M", policies=1, train_per_policy=2, test=2, cot=1, width=32,
                                height=24, workers=1), tmp_path / "clevr", progress=False)
        build_gta(out=tmp_path / "gta_out", gta_dir=release)
        write_json(tmp_path / "report" / "scores.json", {})
        with staged_directory(tmp_path / "model") as stage:
            save_checkpoint(model, processor, stage)
    finally:
        os.umask(old)
    for root in ("clevr", "gta_out", "report", "model"):
        assert modes(tmp_path / root) == {"dirs": {dir_mode}, "files": {file_mode}}, root
    assert any((tmp_path / "model").glob("*.safetensors"))


def test_fault8_clevr_dir_images_are_copies_not_hard_links(tmp_path, small_clevr):
    from trimpi.data.clevr.build import ClevrConfig, build_clevr

    release = clevr_release(tmp_path / "CLEVR", small_clevr)
    out = tmp_path / "out"
    build_clevr(ClevrConfig(depths=[2], policies=2, train_per_policy=3, test=3, cot=1, general=1,
                            clevr_dir=str(release)), out, progress=False)
    images = list((out / "pool" / "images").iterdir())
    assert images and all(p.stat().st_nlink == 1 for p in images)
    assert all(p.stat().st_nlink == 1 for p in (release / "images").rglob("*.png"))


def test_fault8_general_default_adapts_to_test_split():
    from trimpi.data.clevr.config import ClevrConfig
    from trimpi.errors import ConfigError

    assert ClevrConfig(test=15).general == 15 and ClevrConfig().general == 500
    assert ClevrConfig(policies=2, train_per_policy=100).cot == 200 and ClevrConfig().cot == 2500
    with pytest.raises(ConfigError, match=r"^--general: at most one question per test image \(15\), got 16$"):
        from trimpi.cli.data import clevr_flag

        ClevrConfig.checked(name=clevr_flag, test=15, general=16)


def test_fault8_cli_data_clevr_test_15_builds(tmp_path):
    out = tmp_path / "data"
    code, err = finish(trimpi("data", "clevr", "--out", str(out), "--test", "15", "--train-per-policy", "2",
                              "--policies", "2", "--image-size", "32x24", "--workers", "1"))
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["general"] == 15 and manifest["config"]["cot"] == 4
    assert manifest["settings"]["T-d2"]["counts"]["general_test"] == 15


@pytest.mark.parametrize("flag,value,cli_name,recipe_key", [
    ("--policies", "0", "--policies", "data.clevr.policies"),
    ("--train-per-policy", "0", "--train-per-policy", "data.clevr.train_per_policy"),
    ("--depth", "3", "--depth", "data.clevr.depths"),
    ("--cot", "999", "--cot", "data.clevr.cot"),
    ("--image-size", "8x8", "--image-size", None),
])
def test_fault8_errors_name_cli_flags_on_the_cli_and_keys_in_recipes(tmp_path, flag, value, cli_name, recipe_key):
    import yaml

    from trimpi.errors import ConfigError
    from trimpi.pipeline.recipe import load_recipe

    code, err = finish(trimpi("data", "clevr", "--out", str(tmp_path / "x"), "--train-per-policy", "2", flag, value))
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"error: {cli_name}: "), err
    if recipe_key is None:
        return
    key = recipe_key.rsplit(".", 1)[1]
    clevr = {"train_per_policy": 2, key: [int(value)] if key == "depths" else int(value)}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": "micro", "methods": ["cot_sft"], "data": {"clevr": clevr}}))
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    assert str(e.value).startswith(f"{path}: {recipe_key}: ") and "--" not in str(e.value)


def test_fault8_duplicate_recipe_key_is_an_error(tmp_path):
    from trimpi.errors import ConfigError
    from trimpi.pipeline.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("model: micro\nmethods: [cot_sft]\ndata:\n  clevr:\n    policies: 2\n    policies: 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}:6: policies: key given twice"):
        load_recipe(path)


@pytest.mark.parametrize("section,key,value", [("eval", "batch_size", 0), ("eval", "placement", "middle"),
                                               ("data.gta", "profiles_per_step", 0)])
def test_fault8_recipe_option_errors_name_the_recipe_key(tmp_path, section, key, value):
    import yaml

    from trimpi.errors import ConfigError
    from trimpi.pipeline.recipe import load_recipe

    recipe = {"model": "micro", "methods": ["cot_sft"], "data": {"clevr": {"test": 4}}}
    if section == "eval":
        recipe["eval"] = {key: value}
    else:
        recipe["data"] = {"gta": {key: value}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    assert str(e.value).startswith(f"{path}: {section}.{key}: ") and "--" not in str(e.value), str(e.value)


def test_fault6_os_errors_reaching_the_cli_are_one_line(monkeypatch, capsys):
    """A last resort for environment failures inside libraries (permissions, a full disk)."""
    import typer

    from trimpi import cli

    def refused():
        raise PermissionError(13, "Permission denied", "/somewhere/file")

    app = typer.Typer()
    app.command()(refused)
    monkeypatch.setattr(cli, "app", app)
    monkeypatch.setattr(sys, "argv", ["trimpi"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2 and capsys.readouterr().err == "error: /somewhere/file: Permission denied\n"


def test_fault4_null_tool_result_is_no_result_not_the_word_null():
    from trimpi.data.gta.loader import result_text

    assert result_text(None) == ""


@pytest.mark.parametrize("field,protocol", [("images", "accuracy"), ("policy_path", "in_context")])
def test_fault6_missing_image_or_policy_fails_before_generating(clevr_ds, tmp_path, field, protocol):
    from trimpi.errors import DataError

    ds = copy_dataset(clevr_ds, tmp_path)
    rows = [json.loads(line) for line in (ds / "test.jsonl").read_text().splitlines()]
    rows[1][field] = ["gone.png"] if field == "images" else "policies/gone.json"
    write_split(ds, "test.jsonl", rows)
    gone = ds / ("gone.png" if field == "images" else "policies/gone.json")
    with pytest.raises(DataError, match=rf"^{ds / 'test.jsonl'}:2: field '{field}': {gone} not found$"):
        eval_on(ds, tmp_path / "eval", [protocol])
    assert CountingEngine.calls == 0


def test_fault8_ordinary_modes_loosens_only_private_modes(tmp_path):
    from trimpi.data.io import ordinary_modes

    old = os.umask(0o022)
    try:
        (tmp_path / "sub").mkdir(mode=0o700)
        for name, mode in (("weights", 0o600), ("script", 0o755), ("group", 0o640)):
            (tmp_path / "sub" / name).write_text("x")
            (tmp_path / "sub" / name).chmod(mode)
        ordinary_modes(tmp_path)
    finally:
        os.umask(old)
    got = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "sub").iterdir()}
    assert got == {"weights": "0o644", "script": "0o755", "group": "0o640"}
    assert oct((tmp_path / "sub").stat().st_mode & 0o777) == "0o755"


def test_fault1_sigterm_unwinds_like_ctrl_c(tmp_path):
    """`kill PID` (SIGTERM to the main process only): exit 143, staged output and workers gone, lock released."""
    out = tmp_path / "data"
    proc = trimpi("data", "clevr", "--out", str(out), "--train-per-policy", "3000", "--test", "20", *TINY_CLEVR)
    wait_for(lambda: partials(tmp_path), proc=proc)
    time.sleep(1.0)
    proc.terminate()
    code, err = finish(proc)
    assert code == 143 and err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value,shown", [(None, "null"), ("../../etc/passwd", '"../../etc/passwd"')])
def test_fault6_clevr_scene_with_null_or_path_image_filename_is_one_line(tmp_path, small_clevr, value, shown):
    from trimpi.data.clevr.build import ClevrConfig, build_clevr
    from trimpi.errors import DataError

    release = clevr_release(tmp_path / "CLEVR", small_clevr)
    scenes_file = release / "scenes" / "CLEVR_val_scenes.json"
    data = json.loads(scenes_file.read_text())
    for scene in data["scenes"]:
        scene["image_filename"] = value
    scenes_file.write_text(json.dumps(data))
    cfg = ClevrConfig(depths=[2], policies=2, train_per_policy=3, test=3, cot=1, general=1, clevr_dir=str(release))
    with pytest.raises(DataError, match=rf"CLEVR_val_scenes\.json: scenes\[\d+\]: field 'image_filename' must be a "
                                        rf"file name, got {re.escape(shown)}$"):
        build_clevr(cfg, tmp_path / "out", progress=False)


@pytest.mark.parametrize("path", ["../outside.jpg", "/etc/hostname"])
def test_fault6_gta_file_path_outside_the_release_is_refused(tmp_path, path):
    from test_gta_loader import _item
    from trimpi.data.gta.build import build_gta
    from trimpi.errors import DataError

    item = _item()
    item["files"][0]["path"] = path
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "outside.jpg")  # decodes: only the path itself is wrong
    release = gta_release(tmp_path / "gta", {"0": item, "1": _item()})
    with pytest.raises(DataError, match=r"field files\[0\]\.path: .* must be relative to the release, without '\.\.'"):
        build_gta(out=tmp_path / "out", gta_dir=release)


def test_fault8_preview_count_error_names_the_flag(small_clevr, tmp_path):
    code, err = finish(trimpi("data", "preview", str(small_clevr), "--n", "0", "--out", str(tmp_path / "p.png")))
    assert code == 2 and err.strip().splitlines() == ["error: --n: must be at least 1, got 0"]
