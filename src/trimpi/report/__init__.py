"""Reports: one run's report.md / report.html (report.run) and the repro table over settings and seeds
(report.repro), with their plots (report.plots), reference lines (report.baselines) and RL reward curves with
PolicyRollout's premise (report.rewards)."""

from trimpi.report.baselines import chance_accuracy, majority_accuracy, reference_lines
from trimpi.report.rewards import premise, reward_curves
from trimpi.report.run import (
    efficiency_rows,
    headline,
    load_run,
    report_run,
    results,
    results_markdown,
    step_summary,
    write_report,
)

__all__ = ["chance_accuracy", "efficiency_rows", "headline", "load_run", "majority_accuracy", "premise",
           "reference_lines", "report_run", "results", "results_markdown", "reward_curves", "step_summary",
           "write_report"]
