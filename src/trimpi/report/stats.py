"""How sure a score is: the Wilson 95 % interval of an accuracy, and whether one clears a reference line.

    wilson(42, 56)            # (0.62, 0.84): 42 of 56 right
    clears(0.75, 56, 0.375)   # True: the interval's lower end is above the line

An accuracy that is a mean of 0/1 scores over n records is a binomial proportion; the Wilson interval keeps
its coverage for small n and for proportions near 0 or 1, where the normal interval does not. A method is
called better than a line only when the lower end of its interval is above the line.
"""

from __future__ import annotations

import math

Z95 = 1.959964


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (lower, upper) of `successes` out of `n`; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(successes / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(score: float, n: int) -> tuple[float, float]:
    """The 95 % interval of an accuracy `score` (a share in [0, 1]) measured on n records."""
    return wilson(score * n, n)


def clears(score: float, n: int, line: float) -> bool:
    """True when the accuracy's 95 % interval lies wholly above `line`."""
    return n > 0 and interval(score, n)[0] > line


def fmt_interval(score: float | None, n: int | None) -> str:
    """"62.5 [49.4–74.1], n=56" (percent); "-" without a score."""
    if score is None:
        return "-"
    if not n:
        return f"{100 * score:.1f}"
    lo, hi = interval(score, n)
    return f"{100 * score:.1f} [{100 * lo:.1f}–{100 * hi:.1f}], n={n}"
