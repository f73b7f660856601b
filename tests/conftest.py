"""Fixtures shared by every test module.

    one_thread    (autouse) torch on one thread: tiny matrices spin, and crowd a shared machine, with more
    dataset       a small ClevrPolicy-T depth-2 build (6 test, 6 override, 4 general records); built once,
                  copied fresh for each module, so a module may write into it
    train_data    a hand-made 4-record ClevrPolicy-like directory plus one two-image GTA-style record
                  (train, train_cot, test JSONL; images, scenes, one policy); read-only
    rl_data       (root, train records): 8 single-colour images and a one-condition policy with an image;
                  read-only

Builders that tests call with their own arguments stay plain functions: `_fixtures_train.write_dataset`,
`test_rl_fixtures.make_dataset` / `tiny_model`, `test_eval_fixtures.make_clevr` / `tiny_for`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def no_trusted_code():
    """Code a test trusted (`--trust-code` through the CLI runner, in this process) is forgotten after it."""
    yield
    from trimpi.trust import forget_trust

    forget_trust()


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def _clevr_build(tmp_path_factory) -> Path:
    from test_eval_fixtures import make_clevr

    return make_clevr(tmp_path_factory.mktemp("clevr_build"))


@pytest.fixture(scope="module")
def dataset(_clevr_build, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("clevr") / _clevr_build.parent.name
    shutil.copytree(_clevr_build.parent, copy)  # the whole build: a setting may refer to files beside it
    return copy / _clevr_build.name


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> Path:
    from _fixtures_train import write_dataset

    return write_dataset(tmp_path_factory.mktemp("train_data"), n=4, with_gta=True)


@pytest.fixture(scope="session")
def rl_data(tmp_path_factory):
    from test_rl_fixtures import make_dataset

    from trimpi.data.schema import load_records

    root = make_dataset(tmp_path_factory.mktemp("rl_data"), n=8, with_policy_image=True)
    return root, load_records(root / "train.jsonl")
