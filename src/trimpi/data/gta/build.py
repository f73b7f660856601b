"""`trimpi data gta`: build the GTAPolicy dataset directory.

OUT/
  manifest.json                 config, counts, query ids per split, scorer, file hashes
  policies/GTAPolicy.json       the policy (text + structured data)
  policies/GTAPolicy-override.json  same name, rules changed under a rule-override header
  images/...                    the query images (GTA paths kept: images/image/x.jpg)
  train.jsonl  train_cot.jsonl  test.jsonl  override_test.jsonl

Every reference tool call becomes one single-step instance per sampled profile
(`profiles_per_step` for training, one for test). Queries are split train/test by id.
The same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from trimpi.data.gta.loader import Item, load_gta
from trimpi.data.gta.policy import POLICY_NAME
from trimpi.data.gta.profiles import sample_profile
from trimpi.data.gta.records import make_record
from trimpi.data.gta.rules import versioned_name
from trimpi.data.gta.sample_images import SAMPLE_DIR, materialize
from trimpi.data.gta.scorers import BertScoreScorer, LexicalScorer, minilm_available
from trimpi.data.gta.text import policy_json
from trimpi.data.io import sha256_file, staged_directory, write_json, write_jsonl
from trimpi.errors import ConfigError, DataError

TEST_FRACTION = 0.2
POLICY_PATH = f"policies/{POLICY_NAME}.json"
OVERRIDE_PATH = f"policies/{POLICY_NAME}-override.json"
SAMPLE_LABEL = "trimpi bundled GTA-format sample (written for this project; not the GTA benchmark)"


def split_queries(ids: list[str], seed: int, test_fraction: float = TEST_FRACTION) -> tuple[list[str], list[str]]:
    """Shuffle query ids with the seed; the first ~test_fraction go to test (at least one each if n >= 2)."""
    order = sorted(ids, key=lambda s: (len(s), s))
    random.Random(f"{seed}:split").shuffle(order)
    n_test = round(len(order) * test_fraction)
    if len(order) >= 2:
        n_test = min(max(n_test, 1), len(order) - 1)
    test = sorted(order[:n_test], key=lambda s: (len(s), s))
    train = sorted(order[n_test:], key=lambda s: (len(s), s))
    return train, test


def _records(
    items: list[Item],
    split: str,
    seed: int,
    per_step: int,
    *,
    profile_split: str | None = None,
    policy_path: str = POLICY_PATH,
    override: bool = False,
    with_reasoning: bool = False,
) -> list[dict]:
    """Records for every reference call x `per_step` profiles.

    Profiles are drawn from "seed:profile_split:query:step:k", so train and train_cot (and
    test and override_test) share their profiles.
    """
    rows = []
    for item in items:
        for step in range(len(item.calls)):
            for k in range(per_step):
                profile = sample_profile(f"{seed}:{profile_split or split}:{item.id}:{step}:{k}")
                record = make_record(
                    item,
                    step,
                    profile,
                    split=split,
                    index=k,
                    policy_path=policy_path,
                    override=override,
                    with_reasoning=with_reasoning,
                )
                rows.append(record.to_dict())
    return rows


def _copy_images(items: list[Item], src_root: Path, dest: Path) -> None:
    for rel in sorted({p for it in items for p in it.images}):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / rel, target)


def _scorer_info() -> dict[str, Any]:
    name = BertScoreScorer.name if minilm_available() else LexicalScorer.name
    return {
        "default": name,
        "alternative": LexicalScorer.name,
        "argument_types": "SPEC §3: exact / text similarity / safe numeric / IoU",
    }


def _override_changed(rows: list[dict]) -> int:
    return sum(
        1 for r in rows if versioned_name(r["meta"]["tool"], r["meta"]["profile"]) != json.loads(r["answer"])["name"]
    )


def build_gta(
    out: Path, gta_dir: Path | None = None, profiles_per_step: int = 1, seed: int = 0, overwrite: bool = False
) -> Path:
    """Build the GTAPolicy dataset at `out` from a GTA release (or the bundled sample); return `out`."""
    if profiles_per_step < 1:
        raise ConfigError(f"--profiles-per-step: must be at least 1, got {profiles_per_step}")
    with staged_directory(out, overwrite) as stage:
        images = stage / "images"
        if gta_dir is None:
            materialize(images)
            items = load_gta(SAMPLE_DIR, image_root=images)
        else:
            items = load_gta(gta_dir)
            _copy_images(items, Path(gta_dir), images)
        items = [it for it in items if it.calls]
        if len(items) < 2:
            source = Path(gta_dir or SAMPLE_DIR) / "dataset.json"
            raise DataError(f"{source}: {len(items)} queries with a reference tool call; at least 2 are needed "
                            "(one for train, one for test)")
        train_ids, test_ids = split_queries([it.id for it in items], seed)
        train_items = [it for it in items if it.id in set(train_ids)]
        test_items = [it for it in items if it.id in set(test_ids)]
        splits = {
            "train": _records(train_items, "train", seed, profiles_per_step),
            "train_cot": _records(
                train_items, "train_cot", seed, profiles_per_step, profile_split="train", with_reasoning=True
            ),
            "test": _records(test_items, "test", seed, 1),
            "override_test": _records(
                test_items, "override_test", seed, 1, profile_split="test", policy_path=OVERRIDE_PATH, override=True
            ),
        }
        write_json(stage / POLICY_PATH, policy_json(override=False))
        write_json(stage / OVERRIDE_PATH, policy_json(override=True))
        for name, rows in splits.items():
            write_jsonl(stage / f"{name}.jsonl", rows)
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        manifest = {
            "dataset": "GTAPolicy",
            "task": "gta",
            "policy": POLICY_NAME,
            "policies": {"default": POLICY_PATH, "override": OVERRIDE_PATH},
            "config": {
                "gta_dir": str(gta_dir) if gta_dir else None,
                "profiles_per_step": profiles_per_step,
                "seed": seed,
                "test_fraction": TEST_FRACTION,
            },
            "source": SAMPLE_LABEL if gta_dir is None else f"GTA release at {gta_dir}",
            "counts": {name: len(rows) for name, rows in splits.items()},
            "override_changed_answers": _override_changed(splits["override_test"]),
            "queries": {"train": train_ids, "test": test_ids},
            "steps": {"train": sum(len(i.calls) for i in train_items), "test": sum(len(i.calls) for i in test_items)},
            "tools": dict(sorted(Counter(c.tool for it in items for c in it.calls).items())),
            "images": len(list(images.rglob("*.*"))) if images.exists() else 0,
            "scorer": _scorer_info(),
            "files": {p.relative_to(stage).as_posix(): sha256_file(p) for p in files},
        }
        write_json(stage / "manifest.json", manifest)
    return Path(out)
