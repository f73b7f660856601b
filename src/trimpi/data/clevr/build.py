"""`trimpi data clevr`: the whole ClevrPolicy build, staged in a temporary directory.

    OUT/pool/                      images + scene graphs shared by every setting
    OUT/<variant>-d<depth>/        one setting = one `--data` directory for training/eval
        policies/<name>.json       policy text, images and tree (see tree.py for the tree form)
        override_policies/...      same names, new trees
        train.jsonl train_cot.jsonl test.jsonl override_test.jsonl general_test.jsonl
        manifest.json              config, counts, leaf statistics, content hashes
    OUT/manifest.json              config, settings, pool hashes
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from trimpi.data.clevr import policy as pol
from trimpi.data.clevr.config import ClevrConfig
from trimpi.data.clevr.cot import gold_trace
from trimpi.data.clevr.pool import PoolImage, build_pool
from trimpi.data.clevr.questions import INSTRUCTION as GENERAL_INSTRUCTION
from trimpi.data.clevr.questions import general_question
from trimpi.data.clevr.tree import decide, leaf_labels, random_tree
from trimpi.data.io import sha256_file, staged_directory, write_json, write_jsonl
from trimpi.data.schema import Record
from trimpi.errors import DataError

# Seed streams: each component draws from its own generator, so e.g. variants T and M of one
# seed share trees and names, and adding a depth changes nothing in the others.
TREE, NAMES, ORDER, CROPS, OVERRIDE, RECORDS, GENERAL = range(2, 9)
POOL_DIR = "pool"


def setting_name(variant: str, depth: int) -> str:
    return f"{variant}-d{depth}"


def query_text(name: str) -> str:
    return f"According to Policy: {name}, what should be the response for the given image?"


def boxed(answer: str) -> str:
    return f"\\boxed{{{answer}}}"


def make_policy(cfg: ClevrConfig, depth: int, index: int, name: str, stream: int) -> tuple[dict, list[tuple[str, str]]]:
    """One policy's saved JSON and its crop images (attribute, value), drawn from its own seeds."""
    tree = random_tree(np.random.default_rng([cfg.seed, stream, depth, index]), depth)
    order = pol.section_order(np.random.default_rng([cfg.seed, stream, ORDER, depth, index]), list(tree["nodes"]))
    crops = pol.choose_crops(np.random.default_rng([cfg.seed, stream, CROPS, depth, index]), tree, cfg.variant)
    text, images = pol.verbalize(name, tree, order, crops)
    return pol.policy_json(name, depth, cfg.variant, tree, text, images), images


def write_policies(cfg: ClevrConfig, depth: int, names: list[str], folder: Path, stream: int) -> list[dict]:
    from trimpi.data.clevr.crops import render_attribute_crop

    policies = []
    for index, name in enumerate(names):
        data, images = make_policy(cfg, depth, index, name, stream)
        for attr, value in sorted(set(images)):
            path = folder / pol.crop_filename(attr, value)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                render_attribute_crop(attr, value, cfg.crop_size).save(path, format="PNG")
        write_json(folder / f"{name}.json", data)
        policies.append(data)
    return policies


def _record(rid: str, split: str, policy: dict, policy_path: str, item: PoolImage, reasoning: bool = False,
            trace: str = "full") -> Record:
    objects = item.scene["objects"]
    answer = decide(policy, objects)
    text = gold_trace(policy["name"], policy, objects, trace)[0] if reasoning else None
    return Record(
        id=rid, task="clevr", split=split, policy=policy["name"], policy_path=policy_path,
        images=[f"../{POOL_DIR}/{item.image}"], scene=f"../{POOL_DIR}/{item.scene_file}",
        query=query_text(policy["name"]), answer=answer, response=boxed(answer), reasoning=text,
        meta={"depth": policy["depth"], "variant": policy["variant"]},
    )


def policy_records(
    setting: str, policies: list[dict], folder: str, pool: list[PoolImage], split: str, pairs: list[tuple[int, int]]
) -> list[dict]:
    """Records for (policy index, pool index) pairs."""
    return [
        _record(f"{setting}-{split}-{p:03d}-{i:06d}", split, policies[p], f"{folder}/{policies[p]['name']}.json",
                pool[i]).to_dict()
        for p, i in pairs
    ]


def general_records(cfg: ClevrConfig, setting: str, pool: list[PoolImage]) -> list[dict]:
    rows = []
    for i, item in enumerate(pool[: cfg.general]):
        kind, question, answer = general_question(np.random.default_rng([cfg.seed, GENERAL, i]), item.scene["objects"])
        rows.append(Record(
            id=f"{setting}-general-{i:06d}", task="general", split="general_test", images=[f"../{POOL_DIR}/{item.image}"],
            scene=f"../{POOL_DIR}/{item.scene_file}", query=f"{GENERAL_INSTRUCTION} Question: {question}",
            answer=answer, response=boxed(answer), meta={"kind": kind},
        ).to_dict())
    return rows


def leaf_statistics(policies: list[dict], records: list[dict]) -> dict:
    leaves = [len(leaf_labels(p)) for p in policies]
    reached = {p["name"]: len({r["answer"] for r in records if r["policy"] == p["name"]}) for p in policies}
    return {
        "leaves_min": min(leaves), "leaves_mean": float(np.mean(leaves)), "leaves_max": max(leaves),
        "leaves_per_policy": {p["name"]: n for p, n in zip(policies, leaves, strict=True)},
        "leaves_reached_in_train": reached,
    }


def build_setting(cfg: ClevrConfig, depth: int, pool: dict[str, list[PoolImage]], root: Path) -> dict:
    setting = setting_name(cfg.variant, depth)
    out = root / setting
    names_rng = np.random.default_rng([cfg.seed, NAMES, depth])
    taken: set[str] = set()
    names = [pol.policy_name(names_rng, depth, taken) for _ in range(cfg.policies)]
    policies = write_policies(cfg, depth, names, out / "policies", TREE)
    overrides = write_policies(cfg, depth, names, out / "override_policies", OVERRIDE)

    rng = np.random.default_rng([cfg.seed, RECORDS, depth])
    n_train, n_test = len(pool["train"]), len(pool["test"])
    train_pairs = [(p, i) for p in range(cfg.policies) for i in range(n_train)]
    train_pairs = [train_pairs[k] for k in rng.permutation(len(train_pairs))]
    test_pairs = [(int(p), i) for i, p in enumerate(rng.permutation(n_test) % cfg.policies)]
    cot_pairs = [train_pairs[k] for k in sorted(rng.choice(len(train_pairs), cfg.cot, replace=False))]

    train = policy_records(setting, policies, "policies", pool["train"], "train", train_pairs)
    cot = [
        _record(f"{setting}-train_cot-{p:03d}-{i:06d}", "train_cot", policies[p], f"policies/{names[p]}.json",
                pool["train"][i], reasoning=True, trace=cfg.trace).to_dict()
        for p, i in cot_pairs
    ]
    files = {
        "train.jsonl": train,
        "train_cot.jsonl": cot,
        "test.jsonl": policy_records(setting, policies, "policies", pool["test"], "test", test_pairs),
        "override_test.jsonl": policy_records(
            setting, overrides, "override_policies", pool["test"], "override_test", test_pairs),
        "general_test.jsonl": general_records(cfg, setting, pool["test"]),
    }
    for filename, rows in files.items():
        write_jsonl(out / filename, rows)
    manifest = {
        "dataset": "ClevrPolicy",
        "setting": setting,
        "depth": depth,
        "variant": cfg.variant,
        "config": cfg.model_dump(),
        "policies": names,
        "counts": {name.removesuffix(".jsonl"): len(rows) for name, rows in files.items()},
        "leaf_statistics": leaf_statistics(policies, train),
        "files": hash_tree(out),
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def hash_tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def build_clevr(cfg: ClevrConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Build every requested setting under `out`; nothing appears at `out` unless the build completes."""
    if cfg.clevr_dir and not Path(cfg.clevr_dir).is_dir():
        raise DataError(f"--clevr-dir {cfg.clevr_dir}: not a directory")
    with staged_directory(out, overwrite) as stage:
        pool = build_pool(cfg, stage / POOL_DIR, progress)
        settings = {}
        for depth in tqdm(cfg.depths, desc="writing settings", disable=not progress):
            m = build_setting(cfg, depth, pool, stage)
            settings[m["setting"]] = {"counts": m["counts"], "leaf_statistics": {
                k: v for k, v in m["leaf_statistics"].items() if k.startswith("leaves_m")}}
        manifest = {
            "dataset": "ClevrPolicy",
            "config": cfg.model_dump(),
            "settings": settings,
            "pool": {"train": len(pool["train"]), "test": len(pool["test"]), "files": hash_tree(stage / POOL_DIR)},
        }
        write_json(stage / "manifest.json", manifest)
    return Path(out)


__all__ = ["ClevrConfig", "build_clevr"]
