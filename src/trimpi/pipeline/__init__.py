"""Recipe pipeline: a typed recipe → content-addressed steps (data, stages, evals) → report."""

from trimpi.pipeline.execute import Context
from trimpi.pipeline.plan import Plan, make_plan
from trimpi.pipeline.recipe import METHODS, Recipe, load_recipe, parse_recipe
from trimpi.pipeline.runner import run_recipe, validate

__all__ = ["METHODS", "Context", "Plan", "Recipe", "load_recipe", "make_plan", "parse_recipe", "run_recipe",
           "validate"]
