"""Generate the returns-desk example conversations (TRL `messages` format) and their photos.

    python examples/returns_desk/generate.py --out runs/returns_desk/source

Writes OUT/conversations.jsonl, OUT/photos/*.png and OUT/scenes/*.json. The photos are SYNTHETIC:
scenes of building blocks rendered by trimpi's ClevrPolicy ray caster, standing in for the photos
customers attach to a return request. Gold decisions come from `decide` below, the policy document's
rules (policy.md, and policy_v2.md for the override rows) written as code. The same seed gives
byte-identical output.

Rows: `train` (two customer profiles per photo, with the reasoning a good agent writes), `test`,
`override_test` (the test requests decided by version 2 of the policy) and `general_test` (questions
about the photo that no policy governs, to measure forgetting). About half the requests are
multi-turn: the customer first writes without a photo and the assistant asks for one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from trimpi.data.clevr.render import encode_png, render_numpy
from trimpi.data.clevr.scene import sample_scene
from trimpi.data.io import dumps, staged_directory

POLICY = "blockworks-returns"
WIDTH, HEIGHT = 160, 120
VERSIONS = {  # policy.md (1) and policy_v2.md (2): the thresholds that differ
    1: {"window": 60, "plus_window": 90, "escalate_returns": 3},
    2: {"window": 45, "plus_window": 75, "escalate_returns": 2},
}
NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kira", "Luis")
COMPLAINTS = ("It arrived scratched.", "Wrong colour, sorry.", "I changed my mind.", "It is smaller than I thought.",
              "My kid already has these.", "One piece is chipped.", "It does not match my shelf.")
SYSTEM = "You are the BlockWorks Studio returns assistant."


def has(objects: list[dict], **attrs: str) -> bool:
    return any(all(o[k] == v for k, v in attrs.items()) for o in objects)


def decide(objects: list[dict], profile: dict, version: int = 1) -> tuple[str, str]:
    """(decision, reasoning) under the policy's rules R1-R4, first applicable rule wins."""
    v = VERSIONS[version]
    days, plus, returns = profile["days"], profile["tier"] == "Plus", profile["returns"]
    steps = []
    if has(objects, color="red", shape="cylinder"):
        return "full_refund", "R1: the photo shows a red cylinder, the recalled Beacon pillar. Decision: full_refund."
    steps.append("R1: no red cylinder in the photo.")
    if days > v["window"]:
        ok = plus and days <= v["plus_window"]
        decision = "store_credit" if ok else "reject"
        why = f"a Plus member within {v['plus_window']} days" if ok else (
            "a Standard member" if not plus else f"more than {v['plus_window']} days")
        steps.append(f"R2: delivered {days} days ago, more than {v['window']}; {why}. Decision: {decision}.")
        return decision, " ".join(steps)
    steps.append(f"R2: delivered {days} days ago, within {v['window']}.")
    if has(objects, material="metal", shape="sphere"):
        decision = "escalate" if returns >= v["escalate_returns"] else "replacement"
        cmp = "at least" if decision == "escalate" else "fewer than"
        steps.append(f"R3: the photo shows a metal sphere; {returns} returns, {cmp} {v['escalate_returns']}. "
                     f"Decision: {decision}.")
        return decision, " ".join(steps)
    steps.append("R3: no metal sphere in the photo.")
    decision = "full_refund" if days <= 30 else "store_credit"
    when = "30 or less" if days <= 30 else "31 or more"
    steps.append(f"R4: delivered {days} days ago, {when}. Decision: {decision}.")
    return decision, " ".join(steps)


def sample_profile(rng: np.random.Generator) -> dict:
    recent = rng.random() < 0.7
    return {"name": str(rng.choice(NAMES)), "tier": "Plus" if rng.random() < 0.4 else "Standard",
            "days": int(rng.integers(1, 61) if recent else rng.integers(61, 101)),
            "returns": int(rng.integers(0, 6)), "complaint": str(rng.choice(COMPLAINTS))}


def profile_line(p: dict) -> str:
    return (f"Customer: {p['name']}, {p['tier']} member; delivered {p['days']} days ago; "
            f"{p['returns']} returns in the last 12 months.")


def messages(p: dict, answer: str, reasoning: str, multi_turn: bool) -> list[dict]:
    """A TRL conversation: optional first exchange without the photo, then the request with it."""
    turns = [{"role": "system", "content": SYSTEM}]
    if multi_turn:
        turns += [{"role": "user", "content": f"Hi, I would like to return my order. {p['complaint']}"},
                  {"role": "assistant", "content": "Please send a photo of the items you want to return."}]
        text = f"Policy: {POLICY}\n{profile_line(p)}\nHere is the photo."
    else:
        text = f"Policy: {POLICY}\n{profile_line(p)}\nMessage: \"{p['complaint']}\" What is the decision?"
    turns.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]})
    turns.append({"role": "assistant", "content": f"<think>{reasoning}</think>\n\\boxed{{{answer}}}"})
    return turns


def general_row(i: int, scene: dict, photo: str, rng: np.random.Generator) -> dict:
    """A question about the photo that no policy governs (forgetting probe)."""
    objects = scene["objects"]
    if rng.random() < 0.5:
        q, a = "How many blocks are in the photo?", str(len(objects))
    else:
        shape = str(rng.choice(["cube", "sphere", "cylinder"]))
        q, a = f"Is there a {shape} in the photo? Answer yes or no.", "yes" if has(objects, shape=shape) else "no"
    return {"id": f"general-{i:04d}", "split": "general_test", "answer_type": "exact", "images": [photo], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]},
        {"role": "assistant", "content": f"\\boxed{{{a}}}"}]}


def render(stage: Path, name: str, scene: dict) -> tuple[str, str]:
    (stage / "photos" / f"{name}.png").write_bytes(encode_png(render_numpy(scene, WIDTH, HEIGHT)[0]))
    (stage / "scenes" / f"{name}.json").write_text(dumps(scene) + "\n")
    return f"photos/{name}.png", f"scenes/{name}.json"


def generate(out: Path, seed: int = 0, train_photos: int = 400, test_photos: int = 120, general: int = 40,
             profiles_per_photo: int = 2, overwrite: bool = False) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    rows = []
    with staged_directory(out, overwrite) as stage:
        (stage / "photos").mkdir()
        (stage / "scenes").mkdir()
        for split, n in (("train", train_photos), ("test", test_photos)):
            for i in range(n):
                name = f"{split}-{i:04d}"
                scene = sample_scene(rng, WIDTH, HEIGHT, f"{name}.png", i, split, min_objects=3, max_objects=6,
                                     min_pixels=60)
                photo, graph = render(stage, name, scene)
                for k in range(profiles_per_photo if split == "train" else 1):
                    p = sample_profile(rng)
                    multi = bool(rng.random() < 0.5)
                    versions = [("train" if split == "train" else "test", 1)]
                    if split == "test":
                        versions.append(("override_test", 2))
                    for row_split, version in versions:
                        answer, why = decide(scene["objects"], p, version)
                        rows.append({"id": f"{name}-p{k}", "split": row_split, "images": [photo], "scene": graph,
                                     "decision_rule_version": version, "messages": messages(p, answer, why, multi)})
                if split == "test" and i < general:
                    rows.append(general_row(i, scene, photo, rng))
        (stage / "conversations.jsonl").write_text("".join(dumps(r) + "\n" for r in rows))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["split"]] = counts.get(r["split"], 0) + 1
    return counts


def decisions(path: Path) -> dict[str, dict[str, int]]:
    """Per split, how often each decision is the gold answer."""
    out: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        answer = row["messages"][-1]["content"].rsplit("\\boxed{", 1)[1].rstrip("}")
        split = out.setdefault(row["split"], {})
        split[answer] = split.get(answer, 0) + 1
    return out


def policy_images(folder: Path) -> None:
    """Render the two pictures policy.md shows (the recalled red pillar, a metal ball)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, shape, color, material in (("beacon", "cylinder", "red", "rubber"), ("orb", "sphere", "gray", "metal")):
        obj = {"shape": shape, "color": color, "material": material, "size": "large", "rotation": 0.0,
               "3d_coords": [0.0, 0.0, 0.7]}
        (folder / f"{name}.png").write_bytes(encode_png(render_numpy({"objects": [obj]}, 96, 72)[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-photos", type=int, default=400)
    ap.add_argument("--test-photos", type=int, default=120)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--policy-images", type=Path, help="also (re)render the policy's pictures into this folder")
    args = ap.parse_args()
    counts = generate(args.out, args.seed, args.train_photos, args.test_photos, overwrite=args.overwrite)
    if args.policy_images:
        policy_images(args.policy_images)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for split, dist in decisions(args.out / "conversations.jsonl").items():
        print(f"  {split}: " + ", ".join(f"{k} {v}" for k, v in sorted(dist.items())))


if __name__ == "__main__":
    main()
