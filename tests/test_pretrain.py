"""The micro base's staged pretraining: corpus determinism and disjointness, exact resume across stages,
what each stage trains, gates, untrusted checkpoints, dtype choice."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from trimpi.data.clevr.policy import policy_name
from trimpi.data.io import write_json
from trimpi.data.pretrain import split
from trimpi.data.pretrain.corpus import Corpus, CorpusConfig, draw_policy
from trimpi.errors import ConfigError, DataError, TrimpiError
from trimpi.train.pretrain import Architecture, PretrainOptions, Stage, cpu_has_fast_bf16, run_pretrain

SMALL = ((48, 36),)
TINY = Architecture(family="fast_vlm", eye_width=64, eye_height=64, eye_widths=(8, 16, 32, 64), hidden=64, layers=1,
                    heads=2, kv_heads=2, intermediate=96, vocab=600)
TINY_SIGLIP = Architecture(family="idefics3", image_size=56, vision_hidden=64, vision_layers=1, vision_heads=2, hidden=64,
                           layers=1, heads=2, kv_heads=2, intermediate=96, vocab=600)


def _cfg(**kw) -> CorpusConfig:
    return CorpusConfig(shard_size=3, sizes=SMALL, **kw)


def test_corpus_is_a_function_of_seed_and_index(tmp_path):
    a = Corpus(tmp_path / "a", _cfg()).items(1, 4)
    b = Corpus(tmp_path / "b", _cfg()).items(1, 4)
    strip = lambda rows, root: [str(r).replace(str(root), "") for r in rows]  # noqa: E731
    assert strip(a, tmp_path / "a") == strip(b, tmp_path / "b")
    for x, y in zip(a, b, strict=True):
        assert open(x["image"], "rb").read() == open(y["image"], "rb").read()
    other = Corpus(tmp_path / "c", _cfg(seed=1)).items(1, 4)
    assert strip(other, tmp_path / "c") != strip(a, tmp_path / "a")


def test_pretraining_names_never_equal_clevrpolicy_names(tmp_path):
    rng = np.random.default_rng(0)
    taken: set[str] = set()
    eval_names = {policy_name(rng, d, taken) for d in (2, 4, 6) for _ in range(300)}
    assert {split.name_syllables(n) for n in eval_names} == {3}
    rows = Corpus(tmp_path / "p", _cfg(mix={"policy": 1.0, "override": 1.0})).items(0, 6)
    names = {r["meta"]["name"] for r in rows}
    assert names and {split.name_syllables(n) for n in names} <= set(split.SYLLABLES)
    assert not names & eval_names
    for r in rows:  # the name in the prompt is the pretraining one
        assert r["meta"]["name"] in r["messages"][-2]["content"][-1]["text"]


def test_excluded_scenes_and_trees_are_never_generated(tmp_path):
    first = Corpus(tmp_path / "a", _cfg(mix={"exist": 1.0})).items(0, 2)
    evaluation = tmp_path / "eval"
    write_json(evaluation / "pool" / "scenes" / "x.json", {"objects": first[0]["objects"]})
    tree = draw_policy(np.random.default_rng(5), 2, "T", split.Exclusions())
    write_json(evaluation / "T-d2" / "policies" / "L2-Bakuta.json", tree)
    excl = split.Exclusions.from_datasets([evaluation])
    assert split.tree_key(tree) in excl.trees and tree["name"] in excl.names
    again = Corpus(tmp_path / "b", _cfg(mix={"exist": 1.0}, exclude=(str(evaluation),))).items(0, 2)
    assert split.scene_key(again[0]["objects"]) != split.scene_key(first[0]["objects"])
    assert split.scene_key(again[1]["objects"]) == split.scene_key(first[1]["objects"])  # others unchanged
    with pytest.raises(DataError, match="to exclude not found"):
        split.Exclusions.from_datasets([tmp_path / "missing"])
    redrawn = draw_policy(np.random.default_rng(5), 2, "T", excl)
    assert split.tree_key(redrawn) != split.tree_key(tree)


def test_perception_answers_follow_the_scene_graph(tmp_path):
    from trimpi.data.clevr.tree import exists

    rows = Corpus(tmp_path / "e", _cfg(mix={"exist": 1.0, "object": 1.0})).items(0, 6)
    for r in rows:
        question = r["messages"][0]["content"][1]["text"]
        answer = r["messages"][1]["content"][0]["text"]
        if r["kind"] == "exist":
            words = question.removeprefix("Is there ").rstrip("?").split()[1:]
            from trimpi.data.clevr.tree import ATTRIBUTE_VALUES

            conj = {a: w for w in words for a, vals in ATTRIBUTE_VALUES.items() if w in vals}
            assert answer == ("Yes." if exists(r["objects"], conj) else "No.")
        else:
            assert answer.removeprefix("a ") in {f"{o['size']} {o['color']} {o['material']} {o['shape']}"
                                                 for o in r["objects"]}


def _stages(steps=2, target=0.0) -> tuple[Stage, ...]:
    """Every stage kind at toy size; gates whose targets a random model meets (0 accuracy, gap <= 1)."""
    return (Stage("vision", steps, "vision", {"exist": 1.0}, 1e-3, batch_size=2, lm_weight=0.0,
                  perception_weight=1.0, sizes=SMALL, gate="head_perception", target=target),
            Stage("ground", steps, "language", {"exist": 1.0, "count": 1.0}, 1e-3, batch_size=2, sizes=SMALL,
                  gate="lm_perception", target=1.0),
            Stage("joint", steps, "all", {"policy": 1.0, "exist": 1.0}, 1e-4, batch_size=2, sizes=SMALL,
                  perception_weight=0.5))


def _opts(out, **kw) -> PretrainOptions:
    base = dict(out=str(out), arch=TINY, stages=_stages(), shard_size=3, tokenizer_policies=1, warmup_steps=2,
                progress=False, data_workers=0, dtype="float32", heldout_images=6, lm_heldout_images=2)
    return PretrainOptions(**(base | kw))


def _state(out, stage="stage-3-joint"):
    return torch.load(out / stage / "checkpoint" / "state.pt", weights_only=True)


def test_killed_and_rerun_pretraining_reaches_the_same_weights(tmp_path):
    straight = run_pretrain(_opts(tmp_path / "straight"))
    assert straight["finished"] and not straight["resumed"] and straight["stopped"] is None
    first = run_pretrain(_opts(tmp_path / "chunked", stop_after=3))  # killed inside the second stage
    assert not first["finished"] and "step 1 of 2" in first["stopped"]
    assert (tmp_path / "chunked" / "stage-1-vision" / "done.json").is_file()
    second = run_pretrain(_opts(tmp_path / "chunked"))
    assert second["resumed"] and second["finished"]
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "chunked")
    for part in ("model", "head"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), k
    assert a["step"] == b["step"] == 2
    _check_export(tmp_path)


def test_a_run_continues_from_its_finished_stages_packed_weights_only(tmp_path):
    from trimpi.train.pretrain import pack_finished

    straight = tmp_path / "straight"
    run_pretrain(_opts(straight))
    run_pretrain(_opts(tmp_path / "partial", stop_after=4))  # vision and ground done, joint not begun
    assert pack_finished(tmp_path / "partial", tmp_path / "packed") == ["vision", "ground"]
    packed = torch.load(tmp_path / "packed" / "stage-1-vision" / "checkpoint" / "state.pt", weights_only=True)
    assert set(packed) == {"model", "head", "step", "seconds", "dtype"}  # no optimizer state to carry
    assert run_pretrain(_opts(tmp_path / "packed"))["finished"]
    a, b = _state(straight), _state(tmp_path / "packed")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def _check_export(tmp_path):
    """The finished run exports as a verified base that loads in the compute dtype."""
    from trimpi.models.shipped import load_base
    from trimpi.train.pretrain import export_run

    manifest = export_run(tmp_path / "straight", tmp_path / "base")
    assert manifest["architecture"]["family"] == "fast_vlm"
    assert manifest["architecture"]["image_tokens"] == TINY.image_tokens
    assert set(manifest["stages"]) == {"vision", "ground", "joint"} and "passed" in manifest["stages"]["vision"]
    model, _ = load_base(tmp_path / "base")
    state = _state(tmp_path / "straight")["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name].to(torch.bfloat16).float()), name
    assert type(model).__name__ == "FastVlmForConditionalGeneration"


@pytest.mark.parametrize("arch", [TINY, TINY_SIGLIP], ids=["fast_vlm", "idefics3"])
def test_each_stage_trains_only_its_parameters(tmp_path, arch):
    run_pretrain(_opts(tmp_path / "r", arch=arch, stages=_stages()[:2]))
    vision, ground = (_state(tmp_path / "r", f"stage-{k}")["model"] for k in ("1-vision", "2-ground"))
    fresh = _state(tmp_path / "r", "stage-1-vision")  # the eye moved in "vision", then stayed
    changed = {k for k in vision if not torch.equal(vision[k], ground[k])}
    eye = ("vision_tower", "vision_model")
    assert changed and not any(e in k for k in changed for e in eye)  # the eye is frozen in "ground"
    assert any(m in k for k in changed for m in ("language_model", "text_model"))
    assert any(c in k for k in changed for c in ("projector", "connector"))
    assert fresh["step"] == 2


def test_a_missed_gate_stops_the_run_until_forced(tmp_path):
    stages = _stages(target=1.01)  # no eye reaches a balanced accuracy above 1
    stopped = run_pretrain(_opts(tmp_path / "g", stages=stages))
    assert not stopped["finished"] and "head_perception" in stopped["stopped"] and "MISSED" in stopped["stopped"]
    assert not (tmp_path / "g" / "stage-2-ground").exists()
    again = run_pretrain(_opts(tmp_path / "g", stages=stages))  # the rerun does not train the stage again
    assert again["stopped"] == stopped["stopped"]
    forced = run_pretrain(_opts(tmp_path / "g", stages=stages, force=True))
    assert forced["finished"]


def test_resume_with_other_options_is_refused(tmp_path):
    from trimpi.train.pretrain import export_run

    with pytest.raises(ConfigError, match="no pretraining run"):
        export_run(tmp_path / "r", tmp_path / "base")
    run_pretrain(_opts(tmp_path / "r", stop_after=1))
    with pytest.raises(ConfigError, match="stage vision is at step 1 of 2"):
        export_run(tmp_path / "r", tmp_path / "base")
    with pytest.raises(ConfigError, match="other options.*seed"):
        run_pretrain(_opts(tmp_path / "r", seed=3))
    with pytest.raises(ConfigError, match="other options.*stages already started"):
        run_pretrain(_opts(tmp_path / "r", stages=_stages(steps=3)))
    fewer = _stages()[:1] + (dataclasses.replace(_stages()[1], steps=1), dataclasses.replace(_stages()[2], steps=0))
    assert run_pretrain(_opts(tmp_path / "r", stages=fewer))["finished"]  # stages not started yet may change
    skipped = json.loads((tmp_path / "r" / "stage-3-joint" / "done.json").read_text())
    assert skipped["steps"] == 0 and "gate" not in skipped  # nothing trained: nothing to measure


def test_a_run_writes_only_into_its_own_folder(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "config.json").write_text("{}")
    with pytest.raises(TrimpiError, match="not written by trimpi"):
        run_pretrain(_opts(notes, stop_after=1))
    assert sorted(p.name for p in notes.iterdir()) == ["config.json"]
    run_pretrain(_opts(tmp_path / "r", stop_after=1))
    assert (tmp_path / "r" / ".trimpi").is_file()


def test_a_crafted_checkpoint_is_refused_without_running_it(tmp_path):
    import os
    import pickle

    run_pretrain(_opts(tmp_path / "r", stop_after=1))
    sentinel = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {sentinel}",)

    (tmp_path / "r" / "stage-1-vision" / "checkpoint" / "state.pt").write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(ConfigError, match="not a readable pretraining checkpoint"):
        run_pretrain(_opts(tmp_path / "r"))
    assert not sentinel.exists()


def test_architecture_checks_heads_and_eye_grid():
    with pytest.raises(ConfigError, match="multiple of heads"):
        Architecture(hidden=100, heads=8).check()
    with pytest.raises(ConfigError, match="multiples of 32"):
        Architecture(family="fast_vlm", eye_width=100).check()
    assert Architecture().image_tokens == 16 and Architecture(family="fast_vlm").image_tokens == 20
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        Architecture(image_size=100).check()


def test_bf16_only_on_cpus_with_amx_or_avx512_bf16():
    assert cpu_has_fast_bf16("flags\t\t: fpu sse avx2 amx_bf16 amx_tile\n")
    assert cpu_has_fast_bf16("flags\t\t: fpu avx512f avx512_bf16\n")
    assert not cpu_has_fast_bf16("flags\t\t: fpu sse avx2 fma\n")


def test_shards_written_in_parallel_equal_the_ones_a_run_writes(tmp_path):
    from trimpi.train.pretrain import corpus_config, prepare_corpus

    opts = _opts(tmp_path / "a")
    assert prepare_corpus(opts, shards=2, workers=2, progress=False) == 6  # 2 per stage
    assert prepare_corpus(opts, shards=2, workers=2, progress=False) == 0  # already there
    serial = Corpus(tmp_path / "b", corpus_config(_opts(tmp_path / "b"), opts.stages[1], 1))
    for k in range(2):
        serial.shard(k)
        for name in ("items.jsonl", f"images/{3 * k:08d}.png"):
            a = (tmp_path / "a" / "stage-2-ground" / "corpus" / f"shard-{k:05d}" / name).read_bytes()
            assert a == (serial.shard_dir(k) / name).read_bytes()


def test_micro_batches_group_by_length_within_the_budget():
    from trimpi.train.pretrain import item_chars, micro_batches

    items = [{"id": str(i), "messages": [{"role": "user", "content": [{"type": "text", "text": "x" * n}]}]}
             for i, n in enumerate([900, 100, 120, 3000, 110])]
    groups = micro_batches(items, max_chars=400)
    assert [[it["id"] for it in g] for g in groups] == [["1", "4", "2"], ["0"], ["3"]]
    assert all(len(g) * max(item_chars(it) for it in g) <= 400 or len(g) == 1 for g in groups)


def test_length_grouped_micro_batches_give_the_same_gradients(tmp_path):
    from trimpi.train.perception import PerceptionHead, existence_labels
    from trimpi.train.pretrain import StageTrainer, build_model

    def grads(max_chars):
        opts = _opts(tmp_path / "g", max_batch_chars=max_chars)
        model, processor = build_model(opts)
        head = PerceptionHead(TINY.hidden, len(existence_labels()))
        trainer = StageTrainer(opts, 2, model, processor, head, torch.device("cpu"), tmp_path / "g")
        parts = trainer.backward(trainer.batch_items())
        return parts, [p.grad.clone() for p in trainer.params if p.grad is not None]

    whole, g_whole = grads(10**9)
    split_parts, g_split = grads(1)  # one item per micro-batch
    assert whole["lm"] == pytest.approx(split_parts["lm"], rel=1e-5)
    assert len(g_whole) == len(g_split)
    for a, b in zip(g_whole, g_split, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_tool_items_follow_their_own_rules_never_gtapolicys():
    from trimpi.data.gta.rules import versioned_name
    from trimpi.data.pretrain.tools import GTA_ASSIGNMENTS, _assignment, random_rules, tool_item

    for i in range(40):
        rules = random_rules(np.random.default_rng(i))
        assert _assignment(rules) not in GTA_ASSIGNMENTS
    differs = 0
    for i in range(40):
        text, question, answer, meta = tool_item(np.random.default_rng([7, i]), f"k{i}")
        assert "GTAPolicy" not in text and meta["name"].startswith("Tools-")
        assert answer.startswith(meta["tool"] + "_v") and f"call {answer}." in text
        assert meta["tool"] in question
        differs += answer != versioned_name(meta["tool"], meta["profile"])
    assert differs > 0  # the answers are not GTAPolicy's


def test_corpus_policy_depths_are_a_config_choice(tmp_path):
    rows = Corpus(tmp_path / "d", _cfg(mix={"policy": 1.0}, depths=(6,))).items(0, 3)
    assert {r["meta"]["depth"] for r in rows} == {6}
    with pytest.raises(ConfigError, match="depths"):
        _cfg(depths=(3,)).check()
