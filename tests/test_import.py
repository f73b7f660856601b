"""`trimpi data import`: policy documents, every example format, TRL conversations, splits, and bad input
(one line naming file / row / field, non-zero exit, nothing written)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from trimpi.cli import main as cli_main
from trimpi.data.answers import score_answer
from trimpi.data.imports import ImportOptions, import_dataset
from trimpi.data.imports.policy_doc import load_policy_doc
from trimpi.data.io import read_json, sha256_file
from trimpi.data.schema import PolicyStore, load_records, render_messages
from trimpi.errors import DataError
from trimpi.train.examples import build_examples

COLORS = ("red", "green", "blue", "white")


def rows(n: int = 10) -> list[dict]:
    return [{"id": f"r{i}", "query": f"Customer {i}: may I return this?", "images": [f"img/{COLORS[i % 4]}.png"],
             "answer": "refund" if i % 2 else "reject", "reasoning": f"case {i}" if i % 3 == 0 else None}
            for i in range(n)]


@pytest.fixture
def src(tmp_path) -> Path:
    (tmp_path / "img").mkdir()
    for c in COLORS:
        Image.new("RGB", (24, 16), c).save(tmp_path / "img" / f"{c}.png")
    (tmp_path / "policy.md").write_text(
        "---\nname: desk\nimages: [img/red.png]\n---\n# Returns desk\nA damaged item looks like <image>.\n"
        "An intact one looks like ![intact](img/green.png \"ok\").\nAnswer refund or reject.\n")
    with (tmp_path / "ex.jsonl").open("w") as f:
        for r in rows():
            f.write(json.dumps(r) + "\n")
    return tmp_path


def run_import(src: Path, out: Path | None = None, **kw) -> tuple[Path, dict]:
    out = out or src / "out"
    opts = ImportOptions(**{"examples": [src / "ex.jsonl"], "policies": [str(src / "policy.md")], **kw})
    return out, import_dataset(opts, out)


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run `trimpi ...` in-process through the real entry point; (exit code, stderr)."""
    old = sys.argv
    sys.argv = ["trimpi", *args]
    try:
        cli_main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


# --- policy documents --------------------------------------------------------------------------------


def test_policy_markdown_images_in_marker_order(src):
    doc = load_policy_doc(str(src / "policy.md"))
    assert doc.name == "desk"
    assert doc.text.count("<image>") == 2 and "![" not in doc.text
    assert [p.name for p in doc.images] == ["red.png", "green.png"]  # <image> from the list, then the Markdown one
    assert load_policy_doc(f"other={src / 'policy.md'}").name == "other"


@pytest.mark.parametrize("text, message", [
    ("---\nimages: [img/red.png]\n---\nno marker here\n", "lists 1 files but the text has only 0"),
    ("two <image> <image>\n", "marker number 1 has no file"),
    ("see ![x](img/missing.png)\n", "policy.md:1: image 'img/missing.png' not found"),
    ("see ![x](https://example.com/a.png)\n", "is a URL"),
])
def test_policy_document_errors(src, text, message):
    (src / "policy.md").write_text(text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_policy_doc(str(src / "policy.md"))


# --- the dataset directory -----------------------------------------------------------------------------


def test_layout_records_policy_and_manifest(src):
    out, manifest = run_import(src, test_fraction=0.3)
    recs = {r.id: r for s in ("train", "test") for r in load_records(out / f"{s}.jsonl")}
    assert sorted(recs) == sorted(r["id"] for r in rows())
    r = recs["r1"]
    assert (r.task, r.policy, r.policy_path, r.answer, r.response) == (
        "custom", "desk", "policies/desk.json", "refund", "\\boxed{refund}")
    assert sha256_file(out / r.images[0]) == sha256_file(src / "img/green.png")
    cot = load_records(out / "train_cot.jsonl")
    assert cot and all(c.reasoning and c.split == "train_cot" for c in cot)
    assert {c.id for c in cot} == {i for i, x in recs.items() if x.split == "train" and x.reasoning}
    policy = PolicyStore(out).get(r)
    assert [sha256_file(p) for p in policy.images] == [sha256_file(src / "img/red.png"),
                                                       sha256_file(src / "img/green.png")]
    msgs = render_messages(r, out, policy)
    assert sum(b["type"] == "image" for m in msgs for b in m["content"]) == 3
    assert manifest["counts"]["train"] + manifest["counts"]["test"] == 10
    assert manifest["images"] == 4  # each picture once, policy and examples together
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest
    assert read_json(out / "manifest.json") == manifest
    assert build_examples(out, "sft", "cot") and build_examples(out, "cpt", "cot")


def test_split_is_deterministic_grouped_and_given_splits_win(src):
    data = [{**r, "conversation": f"c{i // 4}"} for i, r in enumerate(rows(40))]
    data[0]["split"] = "test"
    (src / "ex.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    out1, _ = run_import(src, src / "a", columns={"group": "conversation"}, test_fraction=0.5)
    out2, _ = run_import(src, src / "b", columns={"group": "conversation"}, test_fraction=0.5)
    assert (out1 / "test.jsonl").read_bytes() == (out2 / "test.jsonl").read_bytes()
    test = load_records(out1 / "test.jsonl")
    train = load_records(out1 / "train.jsonl")
    assert "r0" in {r.id for r in test}
    group = {r["id"]: r["conversation"] for r in data}
    groups_test = {group[r.id] for r in test if r.id != "r0"}
    assert len(groups_test) == 5  # half of the 10 groups (r0 alone is given its split)
    assert not groups_test & {group[r.id] for r in train}


def test_answer_types_per_dataset_and_per_row(src):
    data = rows(4)
    data[1]["kind"] = "numeric"
    (src / "ex.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    out, manifest = run_import(src, answer_type="choice", columns={"answer_type": "kind"}, test_fraction=0.0)
    types = {r["id"]: r["answer_type"] for r in map(json.loads, (out / "train.jsonl").read_text().splitlines())}
    assert types == {"r0": "choice", "r1": "numeric", "r2": "choice", "r3": "choice"}
    assert manifest["answer_types"] == {"choice": 3, "numeric": 1}
    with pytest.raises(DataError, match="--answer-type: answer type 'fuzzy': expected one of"):
        run_import(src, src / "x", answer_type="fuzzy")


def test_answer_type_object_is_scored_by_the_shared_scorers(src):
    spec = '{"type": "choice", "options": ["refund", "reject"]}'
    out, manifest = run_import(src, answer_type=spec, test_fraction=0.0)
    recs = load_records(out / "train.jsonl")
    assert recs[0].answer_type == {"type": "choice", "options": ["refund", "reject"]}
    assert manifest["answer_types"] == {json.dumps(json.loads(spec), sort_keys=True): 10}
    r = next(r for r in recs if r.answer == "refund")
    assert [score_answer(t, r).score for t in ("\\boxed{refund}", "\\boxed{A}", "\\boxed{reject}", "refund")] == \
        [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(DataError, match="option 'options' must be a list of strings"):
        run_import(src, src / "x", answer_type='{"type": "choice", "options": "refund"}')


# --- formats -----------------------------------------------------------------------------------------------


def write_formats(src: Path) -> dict[str, Path]:
    """The same ten rows as CSV (renamed columns, ';' images), Parquet, JSON and a DatasetDict with Image bytes."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = rows()
    with (src / "ex.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "images", "label", "reasoning"])
        for r in data:
            w.writerow([r["id"], r["query"], ";".join(r["images"]), r["answer"], r["reasoning"] or ""])
    pq.write_table(pa.Table.from_pylist(data), src / "ex.parquet")
    (src / "ex.json").write_text(json.dumps(data))
    feats = datasets.Features({"id": datasets.Value("string"), "query": datasets.Value("string"),
                               "images": datasets.Sequence(datasets.Image()), "answer": datasets.Value("string"),
                               "reasoning": datasets.Value("string")})
    hf = {k: [r[k] if k != "images" else [str(src / p) for p in r[k]] for r in data] for k in feats}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(hf, features=feats)}).save_to_disk(str(src / "hf"))
    return {"csv": src / "ex.csv", "parquet": src / "ex.parquet", "json": src / "ex.json", "hf": src / "hf"}


def content(out: Path) -> list[tuple]:
    recs = [r for s in ("train", "test") if (out / f"{s}.jsonl").is_file() for r in load_records(out / f"{s}.jsonl")]
    return sorted((r.id, r.query, r.answer, r.response, r.reasoning, tuple(sha256_file(out / p) for p in r.images))
                  for r in recs)


def test_every_format_gives_the_same_records(src):
    files = write_formats(src)
    ref, _ = run_import(src, src / "jsonl")
    for name, path in files.items():
        cols = {"query": "question", "answer": "label"} if name == "csv" else {}
        out, _ = run_import(src, src / f"out-{name}", examples=[path], columns=cols)
        assert content(out) == content(ref), name
    assert {r.split for r in load_records(src / "out-hf" / "train.jsonl")} == {"train"}  # the DatasetDict's split


def test_trl_messages_prompt_completion_history_and_tool_calls(src):
    img = {"type": "image"}
    data = [
        {"id": "m1", "images": ["img/red.png", "img/blue.png"], "messages": [
            {"role": "system", "content": "You are the returns desk."},
            {"role": "user", "content": [img, {"type": "text", "text": "Is this damaged?"}]},
            {"role": "assistant", "content": "Let me look closer. Send the box too."},
            {"role": "user", "content": [img, {"type": "text", "text": "Here is the box."}]},
            {"role": "assistant", "content": "<think>The box is crushed.</think>\nDamaged in transit. \\boxed{refund}"},
        ]},
        {"id": "m2", "images": ["img/green.png"],
         "prompt": [{"role": "user", "content": [img, {"type": "text", "text": "Start a return."}]}],
         "completion": [{"role": "assistant", "tool_calls": [
             {"type": "function", "function": {"name": "open_return", "arguments": "{\"reason\": \"intact\"}"}}]}]},
        {"id": "m3", "prompt": "Plain question?", "completion": "reject", "images": ["img/white.png"]},
        {"id": "c4", "query": "And this one?", "answer": "refund", "images": ["img/blue.png"], "history": [
            {"role": "user", "content": [{"type": "image", "image": "img/red.png"}, {"type": "text", "text": "This?"}]},
            {"role": "assistant", "content": "\\boxed{reject}"}]},
    ]
    (src / "ex.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    out, _ = run_import(src, test_fraction=0.0)
    recs = {r.id: r for r in load_records(out / "train.jsonl")}
    m1 = recs["m1"]
    assert m1.query.startswith("Interaction history so far:\nUser: [image 1]Is this damaged?\nAssistant: Let me look")
    assert m1.query.endswith("Assistant: Let me look closer. Send the box too.\n\nHere is the box.")
    assert "returns desk" not in m1.query  # the system turn is dropped
    assert [sha256_file(out / p) for p in m1.images] == [sha256_file(src / "img/red.png"),
                                                         sha256_file(src / "img/blue.png")]
    assert (m1.answer, m1.reasoning) == ("refund", "The box is crushed.")
    assert m1.response == "Damaged in transit. \\boxed{refund}"
    assert [t["role"] for t in m1.meta["history"]] == ["user", "assistant"]
    m2 = json.loads((out / "train.jsonl").read_text().splitlines()[1])
    assert json.loads(m2["answer"]) == {"name": "open_return", "arguments": {"reason": "intact"}}
    assert m2["response"] == m2["answer"] and m2["answer_type"] == "tool_call"
    m3 = recs["m3"]
    assert (m3.query, m3.answer, m3.response) == ("Plain question?", "reject", "\\boxed{reject}")
    assert [r.id for r in load_records(out / "train_cot.jsonl")] == ["m1"]
    c4 = recs["c4"]  # a plain row with a history column: the history's image first
    assert c4.query == "Interaction history so far:\nUser: [image 1]This?\nAssistant: \\boxed{reject}\n\nAnd this one?"
    assert [sha256_file(out / p) for p in c4.images] == [sha256_file(src / "img/red.png"),
                                                         sha256_file(src / "img/blue.png")]


# --- bad input, as a new user would give it ----------------------------------------------------------------


BAD_CASES = {
    "missing image": (lambda s: s.__setitem__(0, {**s[0], "images": ["img/nope.png"]}),
                      "ex.jsonl:1: field 'images': image file 'img/nope.png' not found"),
    "no answer": (lambda s: s.__setitem__(2, {k: v for k, v in s[2].items() if k != "answer"}),
                  "ex.jsonl:3: field 'answer': missing or empty"),
    "unknown policy": (lambda s: s.__setitem__(1, {**s[1], "policy": "dsk"}),
                       "ex.jsonl:2: field 'policy': unknown policy 'dsk'"),
    "no assistant turn": (lambda s: s.__setitem__(3, {"messages": [{"role": "user", "content": "hi"}]}),
                          "ex.jsonl:4: field 'messages': no assistant turn"),
    "not an image": (lambda s: s.__setitem__(4, {**s[4], "images": ["policy.md"]}),
                     "ex.jsonl:5: field 'images': policy.md is not a readable image"),
    "unknown split": (lambda s: s.__setitem__(5, {**s[5], "split": "validation"}),
                      "ex.jsonl:6: field 'split': unknown split 'validation'"),
    "repeated id": (lambda s: s.__setitem__(7, {**s[7], "id": "r1", "split": "test"}) or
                    s.__setitem__(1, {**s[1], "split": "test"}),
                    "ex.jsonl:8: field 'id': 'r1' repeats"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_rows_one_line_nonzero_nothing_written(src, capsys, case):
    edit, message = BAD_CASES[case]
    data = rows()
    edit(data)
    (src / "ex.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    code, err = cli(capsys, "data", "import", "--out", str(src / "out"), "--policy", str(src / "policy.md"),
                    "--examples", str(src / "ex.jsonl"))
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (src / "out").exists()
    assert [p.name for p in src.iterdir() if p.name.startswith(".out")] in ([], [".out.lock"])


def test_csv_with_the_wrong_delimiter_says_which(src, capsys):
    (src / "ex.csv").write_text("query;answer;images\nMay I return it?;refund;img/red.png\n")
    code, err = cli(capsys, "data", "import", "--out", str(src / "out"), "--policy", str(src / "policy.md"),
                    "--examples", str(src / "ex.csv"))
    assert code != 0 and err.count("\n") == 1
    assert "ex.csv: header 'query;answer;images'" in err and "--delimiter ';'" in err
    assert not (src / "out").exists()
    code, _ = cli(capsys, "data", "import", "--out", str(src / "out"), "--policy", str(src / "policy.md"),
                  "--examples", str(src / "ex.csv"), "--delimiter", ";")
    assert code == 0 and load_records(src / "out" / "train.jsonl")[0].answer == "refund"


def test_failed_reimport_keeps_the_previous_dataset(src):
    out, _ = run_import(src)
    before = {p.name: p.read_bytes() for p in out.glob("*.jsonl")}
    (src / "ex.jsonl").write_text(json.dumps({**rows(1)[0], "images": ["policy.md"]}) + "\n")
    with pytest.raises(DataError, match="not a readable image"):
        import_dataset(ImportOptions(examples=[src / "ex.jsonl"], policies=[str(src / "policy.md")]), out, True)
    assert {p.name: p.read_bytes() for p in out.glob("*.jsonl")} == before
    assert not [p for p in src.iterdir() if ".partial-" in p.name]


def test_cli_end_to_end(src):
    proc = subprocess.run([sys.executable, "-m", "trimpi", "data", "import", "--out", str(src / "cli"),
                           "--policy", f"desk={src / 'policy.md'}", "--examples", str(src / "ex.jsonl"),
                           "--answer-type", "choice"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "policies desk" in proc.stdout
    assert read_json(src / "cli" / "manifest.json")["answer_types"] == {"choice": 10}


def test_an_image_cut_short_is_refused(src):
    data = (src / "img/red.png").read_bytes()
    (src / "img/cut.png").write_bytes(data[: len(data) // 2])
    (src / "ex.jsonl").write_text(json.dumps({**rows(1)[0], "images": ["img/cut.png"]}) + "\n")
    with pytest.raises(DataError, match=r"ex.jsonl:1: field 'images': cut.png is not a readable image \("):
        run_import(src)
    assert not (src / "out").exists()


def test_a_mistyped_option_is_a_usage_error_not_a_traceback(src, capsys):
    code, err = cli(capsys, "data", "import", "--out", str(src / "out"), "--polcy", str(src / "policy.md"))
    assert code == 2 and "No such option: --polcy" in err and "Traceback" not in err
