"""GTAPolicy as data: tools, argument types, versions, version rules, tips.

This module is the single source of truth. The policy text shown to models
(`trimpi.data.gta.text`) and the rule engine computing the gold versioned tool
(`trimpi.data.gta.rules`) are both derived from the structures below, so they
cannot disagree.

A version rule is a list of *branches*; each branch is a conjunction of
conditions on the user profile and the version it selects. Branches of one tool
are mutually exclusive and together cover every profile (tests check this).
"""

from __future__ import annotations

from dataclasses import dataclass

POLICY_NAME = "GTAPolicy"
ACCOUNT_TYPES = ("A", "B", "C", "D")
PROFILE_FIELDS = ("account_type", "credits", "age")
OPERATORS = ("in", "<", "<=", ">", ">=")

# Argument types (SPEC §3): how each argument is scored.
EXACT_ARGS = ("image", "position", "color", "k", "top1")
TEXT_ARGS = ("attribute", "text", "query", "command", "annotation", "keywords", "instruction")
NUMERIC_ARGS = ("expression",)
BBOX_ARGS = ("bbox",)


@dataclass(frozen=True)
class Cond:
    """One condition on a profile field: `field op value` (value is a tuple for "in")."""

    field: str
    op: str
    value: int | tuple[str, ...]


@dataclass(frozen=True)
class Branch:
    """If every condition holds, the tool's version is `version`."""

    conds: tuple[Cond, ...]
    version: int


@dataclass(frozen=True)
class Arg:
    name: str
    description: str
    optional: bool = False


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: tuple[Arg, ...]
    versions: int = 0  # 0: unversioned (called by its plain name)


def _acct(*types: str) -> Cond:
    return Cond("account_type", "in", tuple(types))


def _cr(op: str, v: int) -> Cond:
    return Cond("credits", op, v)


def _age(op: str, v: int) -> Cond:
    return Cond("age", op, v)


_IMG = Arg("image", "exact file name of the image to use, e.g. image/image_1.jpg")

TOOLS: tuple[Tool, ...] = (
    Tool("OCR", "Recognize the text in an image and return it with positions.", (_IMG,), 5),
    Tool("ImageDescription", "Describe the content of an image in a few sentences.", (_IMG,), 5),
    Tool(
        "RegionAttributeDescription",
        "Describe an attribute (color, material, text, count, ...) of a region of an image.",
        (_IMG, Arg("bbox", 'the region as "(x1, y1, x2, y2)" in pixels'), Arg("attribute", "what to describe")),
        2,
    ),
    Tool(
        "TextToBbox",
        "Locate the object described by a text in an image and return its box.",
        (_IMG, Arg("text", "the object to locate"), Arg("top1", "true to return only the best box", True)),
    ),
    Tool(
        "DrawBox",
        "Draw a box on an image, with an optional annotation.",
        (_IMG, Arg("bbox", 'the box as "(x1, y1, x2, y2)"'), Arg("annotation", "label to write", True)),
    ),
    Tool(
        "AddText",
        "Write a text on an image at a position.",
        (
            _IMG,
            Arg("text", "the text to write"),
            Arg("position", 'e.g. "(x, y)" or "lt", "mm", "rb"'),
            Arg("color", "text color, e.g. red", True),
        ),
    ),
    Tool(
        "GoogleSearch",
        "Search the web and return the top k results.",
        (Arg("query", "the search query"), Arg("k", "number of results to return", True)),
        3,
    ),
    Tool("Calculator", "Evaluate an arithmetic expression.", (Arg("expression", "e.g. (12 + 8) * 3"),)),
    Tool("Solver", "Solve equations with a short Python (SymPy) program.", (Arg("command", "the program"),)),
    Tool("Plot", "Draw a chart with a short Python (matplotlib) program.", (Arg("command", "the program"),)),
    Tool("MathOCR", "Recognize mathematical expressions in an image and return them as LaTeX.", (_IMG,)),
    Tool(
        "CountGivenObject",
        "Count the objects of a given kind in an image.",
        (_IMG, Arg("text", "the kind of object to count")),
        4,
    ),
    Tool("TextToImage", "Generate an image from keywords.", (Arg("keywords", "what to depict"),), 3),
    Tool(
        "ImageStylization",
        "Restyle an image following an instruction.",
        (_IMG, Arg("instruction", "the style change, e.g. turn it into a watercolor")),
        3,
    ),
)
TOOL_NAMES = tuple(t.name for t in TOOLS)
TOOLS_BY_NAME = {t.name: t for t in TOOLS}

# ---- version rules (SPEC §3) ------------------------------------------------------
BASE_RULES: dict[str, tuple[Branch, ...]] = {
    "ImageDescription": (
        Branch((_acct("A"),), 5),
        Branch((_acct("B", "C"), _cr(">", 500)), 4),
        Branch((_acct("B", "C"), _cr("<=", 500)), 3),
        Branch((_acct("D"), _cr(">", 500)), 2),
        Branch((_acct("D"), _cr("<=", 500)), 1),
    ),
    "OCR": (
        Branch((_cr("<=", 250),), 5),
        Branch((_cr(">", 250), _cr("<=", 750), _acct("A", "B")), 4),
        Branch((_cr(">", 250), _cr("<=", 750), _acct("C", "D")), 3),
        Branch((_cr(">", 750), _age("<", 21)), 2),
        Branch((_cr(">", 750), _age(">=", 21)), 1),
    ),
    "GoogleSearch": (
        Branch((_age("<", 21),), 1),
        Branch((_age(">=", 21), _cr("<", 500)), 2),
        Branch((_age(">=", 21), _cr(">=", 500)), 3),
    ),
    "TextToImage": (
        Branch((_acct("A", "B", "C"),), 1),
        Branch((_acct("D"), _cr(">", 500)), 2),
        Branch((_acct("D"), _cr("<=", 500)), 3),
    ),
    "RegionAttributeDescription": (
        Branch((_acct("A", "B"),), 2),
        Branch((_acct("C", "D"),), 1),
    ),
    "CountGivenObject": (
        Branch((_cr("<", 250),), 1),
        Branch((_cr(">=", 250), _cr("<", 500)), 2),
        Branch((_cr(">=", 500), _cr("<", 750)), 3),
        Branch((_cr(">=", 750),), 4),
    ),
    "ImageStylization": (
        Branch((_age("<", 21),), 1),
        Branch((_age(">=", 21), _age("<", 60)), 2),
        Branch((_age(">=", 60),), 3),
    ),
}

# The override rule set: same policy name, these tools' rules replaced (the others unchanged).
OVERRIDE_RULES: dict[str, tuple[Branch, ...]] = {
    "OCR": (
        Branch((_cr("<=", 250),), 1),
        Branch((_cr(">", 250), _cr("<=", 750), _acct("A", "B")), 2),
        Branch((_cr(">", 250), _cr("<=", 750), _acct("C", "D")), 3),
        Branch((_cr(">", 750), _age("<", 21)), 4),
        Branch((_cr(">", 750), _age(">=", 21)), 5),
    ),
    "ImageDescription": (
        Branch((_acct("A"),), 1),
        Branch((_acct("B", "C"), _cr(">", 500)), 2),
        Branch((_acct("B", "C"), _cr("<=", 500)), 3),
        Branch((_acct("D"), _cr(">", 500)), 4),
        Branch((_acct("D"), _cr("<=", 500)), 5),
    ),
    "GoogleSearch": (
        Branch((_age("<", 21),), 3),
        Branch((_age(">=", 21), _cr("<", 500)), 1),
        Branch((_age(">=", 21), _cr(">=", 500)), 2),
    ),
    "CountGivenObject": (
        Branch((_cr("<", 250),), 4),
        Branch((_cr(">=", 250), _cr("<", 500)), 3),
        Branch((_cr(">=", 500), _cr("<", 750)), 2),
        Branch((_cr(">=", 750),), 1),
    ),
}

# Tool-choice rules that do not depend on the profile, cited by the gold reasoning.
MATHOCR_RULE = "If the image holds mathematical expressions, use MathOCR instead of any OCR version."
TIPS: dict[str, str] = {
    "describe_first": (
        "When the query has several images, first describe each image with ImageDescription "
        "unless that has already been done."
    ),
    "bbox_first": ('Call TextToBbox before RegionAttributeDescription; a bbox is written "(x1, y1, x2, y2)".'),
    "exact_names": "Use the exact image file names as argument values.",
    "search_k": "GoogleSearch uses k=1 for closed questions and k=4 for open-ended ones.",
}


def rule_set(override: bool = False) -> dict[str, tuple[Branch, ...]]:
    """The version rules in force: the base rules, or the base rules updated by the override."""
    rules = dict(BASE_RULES)
    if override:
        rules.update(OVERRIDE_RULES)
    return rules
