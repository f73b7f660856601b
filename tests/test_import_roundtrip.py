"""Round trip: a ClevrPolicy / GTAPolicy dataset exported to one JSONL file and imported back trains and
scores exactly like the native directory (same training sequences up to image file names, same scores)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from trimpi.data.gta.build import build_gta
from trimpi.data.gta.scorers import LexicalScorer
from trimpi.data.imports import ImportOptions, import_dataset
from trimpi.data.schema import PolicyStore, load_records
from trimpi.eval.referral import score_referral
from trimpi.eval.scoring import score_example
from trimpi.train.examples import build_examples
from trimpi.train.rl.rewards import RewardSpec

SPLITS = ("train", "train_cot", "test", "override_test", "general_test")


def export_jsonl(native: Path) -> Path:
    """Every split of `native` in one JSONL next to it (paths stay relative to `native`)."""
    lines = []
    for split in SPLITS:
        path = native / f"{split}.jsonl"
        if path.is_file():
            lines += [line for line in path.read_text().splitlines() if line.strip()]
    out = native / "export.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def by_content(value):
    """Messages with every image path replaced by its file's SHA-256 (file names differ, contents must not)."""
    if isinstance(value, dict):
        return {k: (digest(v) if k == "path" else by_content(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [by_content(v) for v in value]
    return value


def reimport(native: Path, tmp: Path, policies: list[str], overrides: list[str]) -> Path:
    out = tmp / "imported"
    import_dataset(ImportOptions(examples=[export_jsonl(native)], policies=policies, override_policies=overrides,
                                 test_fraction=0.0, media_root=native.parent), out)  # images in ../pool
    return out


@pytest.fixture(scope="module")
def clevr_pair(dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rt-clevr")
    native = dataset
    pol = [str(p) for p in sorted((native / "policies").glob("*.json"))]
    over = [str(p) for p in sorted((native / "override_policies").glob("*.json"))]
    return native, reimport(native, tmp, pol, over)


@pytest.fixture(scope="module")
def gta_pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rt-gta")
    native = build_gta(out=tmp / "gta", seed=0)
    return native, reimport(native, tmp, [str(native / "policies/GTAPolicy.json")],
                            [f"GTAPolicy={native / 'policies/GTAPolicy-override.json'}"])


def same_records(native: Path, imported: Path) -> None:
    for split in SPLITS:
        if not (native / f"{split}.jsonl").is_file():
            assert not (imported / f"{split}.jsonl").is_file()
            continue
        a, b = load_records(native / f"{split}.jsonl"), load_records(imported / f"{split}.jsonl")
        assert [r.id for r in a] == [r.id for r in b]
        for ra, rb in zip(a, b, strict=True):
            for key in ("task", "split", "policy", "query", "answer", "response", "reasoning", "meta"):
                assert getattr(ra, key) == getattr(rb, key), (split, ra.id, key)
            assert [digest(native / p) for p in ra.images] == [digest(imported / p) for p in rb.images]
            assert (ra.scene is None) == (rb.scene is None)
            if ra.scene:
                assert json.loads((native / ra.scene).read_text()) == json.loads((imported / rb.scene).read_text())
            sa, sb = PolicyStore(native), PolicyStore(imported)
            if ra.policy_path:
                pa, pb = sa.get(ra), sb.get(rb)
                assert (pa.name, pa.text) == (pb.name, pb.text)
                assert [digest(p) for p in pa.images] == [digest(p) for p in pb.images]
                assert {k: v for k, v in pa.raw.items() if k != "images"} == \
                    {k: v for k, v in pb.raw.items() if k != "images"}


def same_training(native: Path, imported: Path) -> None:
    for stage, target in (("cpt", "cot"), ("sft", "cot"), ("sft", "answer")):
        a, b = build_examples(native, stage, target), build_examples(imported, stage, target)
        assert by_content(a) == by_content(b), (stage, target)


def completions_for(records) -> list[str]:
    """Right, wrong and malformed answers for every record."""
    texts = []
    for r in records:
        texts += [r.response, f"<think>{r.reasoning or 'x'}</think>\n{r.response}", "\\boxed{Case 1}",
                  '{"name": "OCR", "arguments": {}}', "no answer"]
    return texts


def same_scores(native: Path, imported: Path, split: str = "test") -> None:
    a, b = load_records(native / f"{split}.jsonl"), load_records(imported / f"{split}.jsonl")
    texts = completions_for(a)
    rep = len(texts) // len(a)
    ra = [r for r in a for _ in range(rep)]
    rb = [r for r in b for _ in range(rep)]
    scorer = LexicalScorer()
    assert [score_example(r, t, scorer) for r, t in zip(ra, texts, strict=True)] == \
        [score_example(r, t, scorer) for r, t in zip(rb, texts, strict=True)]
    reward = RewardSpec()
    assert reward.score(texts, ra) == reward.score(texts, rb)
    if a[0].task == "clevr":
        sa, sb = PolicyStore(native), PolicyStore(imported)
        assert [score_referral(r, t, native, sa) for r, t in zip(ra, texts, strict=True)] == \
            [score_referral(r, t, imported, sb) for r, t in zip(rb, texts, strict=True)]


def test_clevr_round_trip_records_training_and_scores(clevr_pair):
    native, imported = clevr_pair
    same_records(native, imported)
    same_training(native, imported)
    same_scores(native, imported)
    same_scores(native, imported, "override_test")


def test_gta_round_trip_records_training_and_scores(gta_pair):
    native, imported = gta_pair
    same_records(native, imported)
    same_training(native, imported)
    same_scores(native, imported)
