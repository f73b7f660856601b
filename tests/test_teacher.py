"""Teacher reasoning traces with a scripted client: prompts, filtering, reverse mode, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trimpi.data.io import read_json
from trimpi.data.schema import PolicyStore, Record, load_records
from trimpi.data.teacher import (
    TeacherOptions,
    check_trace,
    generate_traces,
    progress_path,
    summary_line,
    summary_path,
)
from trimpi.data.teacher_prompts import split_reply, teacher_messages
from trimpi.errors import ConfigError, DataError


def user_key(conv) -> tuple[str, str]:
    """(query text, image path) of a teacher conversation: identifies its record."""
    blocks = conv[-1]["content"]
    image = [b["path"] for b in blocks if b["type"] == "image"][-1]
    text = "".join(b.get("text", "") for b in blocks if b["type"] == "text")
    return text, image


class ScriptedClient:
    """A ChatClient whose reply comes from reply(record, attempt); remembers every conversation."""

    name = "scripted"

    def __init__(self, dataset: Path, reply, fail_after: int | None = None):
        self.records = load_records(dataset / "train.jsonl")
        self.dataset, self.reply, self.fail_after = dataset, reply, fail_after
        self.seen: list[tuple[str, list]] = []
        self.calls: dict[str, int] = {}

    def record_of(self, conv) -> Record:
        text, image = user_key(conv)
        found = [r for r in self.records if r.query in text and str(self.dataset / r.images[-1]) == image]
        assert len(found) == 1, text
        return found[0]

    def complete(self, conversations, max_tokens=512, temperature=0.0):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt("stopped")
        out = []
        for conv in conversations:
            rec = self.record_of(conv)
            self.calls[rec.id] = self.calls.get(rec.id, 0) + 1
            self.seen.append((rec.id, conv))
            out.append(self.reply(rec, self.calls[rec.id]))
        return out


def trace(answer: str, why: str = "Condition 1: yes.") -> str:
    return f"<think>{why} So the response is {answer}.</think>\n\\boxed{{{answer}}}"


def opts(**kw) -> TeacherOptions:
    return TeacherOptions(progress=False, **kw)


def test_prompts_forward_and_reverse(dataset):
    rec = load_records(dataset / "train.jsonl")[0]
    policy = PolicyStore(dataset).get(rec)
    fwd = teacher_messages(rec, dataset, policy, "forward")
    assert fwd[0]["role"] == "system" and policy.text in fwd[0]["content"][0]["text"]
    last = fwd[1]["content"][-1]["text"]
    assert "<think>" in last and "</think>" in last and "\\boxed{" in last and rec.response not in last
    rev = teacher_messages(rec, dataset, policy, "reverse", placement="user")
    assert len(rev) == 1 and policy.text in rev[0]["content"][0]["text"]
    assert rec.response in rev[0]["content"][-1]["text"]


def test_split_reply():
    assert split_reply("pre <think> a b </think> \\boxed{x}") == ("a b", " \\boxed{x}", None)
    assert split_reply("opened by the template </think>\\boxed{x}")[0] == "opened by the template"
    assert split_reply("\\boxed{x}")[2] == "no_think"
    assert split_reply("<think> </think>\\boxed{x}")[2] == "empty_reasoning"
    assert split_reply("<think>a<think>b</think>\\boxed{x}")[2] == "bad_think"


def test_check_trace_by_task_and_mode():
    rec = Record(id="a", task="clevr", query="q", answer="Case 3", response="\\boxed{Case 3}")
    assert check_trace(rec, trace("Case 3"), "forward")["ok"]
    assert check_trace(rec, trace("Case 3"), "forward")["reasoning"].startswith("Condition 1")
    assert check_trace(rec, trace("Case 1"), "forward")["reason"] == "wrong_answer"
    assert check_trace(rec, trace("case 3"), "forward")["reason"] == "wrong_answer"  # exact for ClevrPolicy
    assert check_trace(rec, "<think>Case 3</think> the answer is Case 3", "forward")["reason"] == "wrong_answer"
    assert check_trace(rec, "\\boxed{Case 3}", "forward")["reason"] == "no_think"
    assert check_trace(rec, "<think>Hence Case 31.</think>\\boxed{Case 3}", "reverse")["reason"] == "not_ending_at_gold"
    leak = "<think>The given answer is Case 3, so the response is Case 3.</think>\\boxed{Case 3}"
    assert check_trace(rec, leak, "reverse")["reason"] == "mentions_given_answer"
    assert check_trace(rec, trace("Case 3"), "reverse")["ok"]
    gold = '{"name": "OCR_v4", "arguments": {"image": "image/a.jpg"}}'
    gta = Record(id="g", task="gta", query="q", answer=gold, response=gold)
    ok = check_trace(gta, f"<think>Credits 300, account A: use OCR_v4.</think>\n{gold}", "reverse")
    assert ok["ok"] and ok["score"] == 1.0
    wrong = check_trace(gta, '<think>Use OCR_v1.</think>{"name": "OCR_v1", "arguments": {"image": "image/a.jpg"}}',
                        "forward")
    assert wrong["reason"] == "wrong_answer" and wrong["score"] == 0.5


def test_forward_keeps_only_correct_traces(dataset, tmp_path):
    records = load_records(dataset / "train.jsonl")

    def reply(rec, attempt):  # records 0, 2, 4, 6 right at once; 1 and 5 on the 2nd try; 3 and 7 never
        k = records.index(rec)
        right = k % 2 == 0 or (k in (1, 5) and attempt == 2)
        return trace(rec.answer if right else f"Case {90 + attempt}", why=f"Record {k}.")

    client = ScriptedClient(dataset, reply)
    out = tmp_path / "cot.jsonl"
    summary = generate_traces(client, dataset, out, opts(samples_per_example=3, batch_size=3))
    assert (summary["attempted"], summary["kept"], summary["teacher_calls"]) == (8, 6, 4 + 2 * 2 + 2 * 3)
    assert summary["acceptance_rate"] == 0.75 and summary["rejections"] == {"wrong_answer": 8}
    assert read_json(summary_path(out)) == summary
    kept = load_records(out)
    assert [r.id for r in kept] == [records[k].id for k in (0, 1, 2, 4, 5, 6)]
    for r in kept:
        k = records.index(next(x for x in records if x.id == r.id))
        assert r.reasoning == f"Record {k}. So the response is {records[k].answer}."
        assert r.response == records[k].response and r.split == "train_cot"
        assert r.meta["teacher"] == {"model": "scripted", "mode": "forward", "attempts": 1 if k % 2 == 0 else 2,
                                     "score": 1.0}
        assert r.meta["depth"] == 2  # paths are rewritten relative to the output's directory
        assert (out.parent / r.images[0]).resolve() == (dataset / records[k].images[0]).resolve()
        assert (out.parent / r.policy_path).resolve() == (dataset / records[k].policy_path).resolve()
    assert client.calls[records[3].id] == 3
    assert all("correct answer" not in json.dumps(conv) for _, conv in client.seen)  # forward: no gold
    assert "kept 6 / 8 records (75.0 %), 14 teacher calls" in summary_line(summary)


def test_a_repeated_rejected_reply_ends_the_attempts(dataset, tmp_path):
    client = ScriptedClient(dataset, lambda rec, attempt: trace("Case 99"))
    summary = generate_traces(client, dataset, tmp_path / "r.jsonl", opts(samples_per_example=5, limit=3))
    assert (summary["kept"], summary["teacher_calls"]) == (0, 6) and set(client.calls.values()) == {2}


def test_reverse_prompt_carries_the_gold_answer(dataset, tmp_path):
    def reply(rec, attempt):
        return trace(rec.answer) if attempt == 1 else "<think>Nothing.</think>\\boxed{Case 1}"

    client = ScriptedClient(dataset, reply)
    summary = generate_traces(client, dataset, tmp_path / "rev.jsonl", opts(mode="reverse", limit=4,
                                                                              samples_per_example=2))
    assert summary["kept"] == 4 and summary["teacher_calls"] == 4
    for rid, conv in client.seen:
        rec = next(r for r in client.records if r.id == rid)
        text = conv[-1]["content"][-1]["text"]
        assert "The correct answer to this request is:\n" + rec.response in text
    assert {r.meta["teacher"]["mode"] for r in load_records(tmp_path / "rev.jsonl")} == {"reverse"}


def test_resume_skips_done_ids(dataset, tmp_path):
    out = tmp_path / "resume.jsonl"
    first = ScriptedClient(dataset, lambda rec, a: trace(rec.answer), fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        generate_traces(first, dataset, out, opts(batch_size=2))
    assert not out.exists()
    done = [json.loads(line)["id"] for line in progress_path(out).read_text().splitlines()[1:]]
    assert len(done) == 2
    with progress_path(out).open("a") as f:
        f.write('{"id": "torn')  # a run killed while writing a line
    second = ScriptedClient(dataset, lambda rec, a: trace(rec.answer))
    summary = generate_traces(second, dataset, out, opts(batch_size=2))
    assert set(second.calls) == {r.id for r in second.records} - set(done)
    assert summary["kept"] == 8 and summary["resumed"] == 2
    assert [r.id for r in load_records(out)] == [r.id for r in second.records]
    third = ScriptedClient(dataset, lambda rec, a: trace(rec.answer))
    assert generate_traces(third, dataset, out, opts(batch_size=2))["kept"] == 8 and not third.calls
    with pytest.raises(ConfigError, match="other settings"):
        generate_traces(third, dataset, out, opts(mode="reverse"))
    generate_traces(third, dataset, out, opts(mode="reverse", overwrite=True, limit=1))
    assert len(load_records(out)) == 1


def test_one_line_errors(dataset, tmp_path):
    client = ScriptedClient(dataset, lambda rec, a: trace(rec.answer))
    with pytest.raises(DataError, match="dataset directory not found"):
        generate_traces(client, tmp_path / "nope", opts())
    with pytest.raises(DataError, match=r"settings inside: T-d2"):
        generate_traces(client, dataset.parent, opts())
    with pytest.raises(DataError, match="missing.jsonl: file not found"):
        generate_traces(client, dataset, opts=opts(split="missing"))
    with pytest.raises(ConfigError, match="--mode"):
        generate_traces(client, dataset, opts=opts(mode="sideways"))
    with pytest.raises(ConfigError, match="--samples-per-example"):
        generate_traces(client, dataset, opts=opts(samples_per_example=0))


def test_default_output_next_to_the_data(dataset):
    client = ScriptedClient(dataset, lambda rec, a: trace(rec.answer))
    summary = generate_traces(client, dataset, opts=opts(limit=2))
    out = dataset / "train_cot_teacher.jsonl"
    assert summary["out"] == str(out) and (dataset / "train_cot_teacher.summary.json").is_file()
    records = load_records(dataset / "train.jsonl")[:2]
    assert [(r.images, r.policy_path, r.scene) for r in load_records(out)] == [
        (r.images, r.policy_path, r.scene) for r in records]


def test_gta_tool_calls_are_scored(tmp_path):
    from trimpi.data.gta.build import build_gta

    build_gta(out=tmp_path / "gta", gta_dir=None, profiles_per_step=1, seed=0, overwrite=True)
    data = tmp_path / "gta"
    records = load_records(data / "train.jsonl")[:4]

    class Client:
        name = "gta-teacher"

        def __init__(self):
            self.n = 0

        def complete(self, conversations, max_tokens=512, temperature=0.0):
            out = []
            for conv in conversations:
                rec = records[self.n]
                self.n += 1
                assert "exactly one tool call as JSON" in conv[-1]["content"][-1]["text"]
                call = rec.answer if self.n % 2 else '{"name": "Calculator", "arguments": {}}'
                out.append(f"<think>The profile decides the version.</think>\n{call}")
            return out

    summary = generate_traces(Client(), data, tmp_path / "g.jsonl", opts(limit=4, samples_per_example=1,
                                                                         batch_size=1))
    assert summary["kept"] == 2 and summary["rejections"] == {"wrong_answer": 2}
    assert [r.id for r in load_records(tmp_path / "g.jsonl")] == [records[0].id, records[2].id]
