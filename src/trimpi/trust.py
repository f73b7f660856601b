"""The trust rule: datasets, recipes and run folders are untrusted input.

Nothing in them may import or run code, choose where credentials go, or reach files outside their
own folder. Custom Python (a `package.module:function` answer type or reward) runs only when the
user names that exact function on the command line with `--trust-code package.module:function`,
the way `trust_remote_code=True` works in transformers. A dataset row or a recipe may *name* a
function; it is resolved only if the user trusted that name.

Trusted names also reach the jobs a command starts (`accelerate launch -m trimpi step ...`) through
the environment variable TRIMPI_TRUST_CODE (comma-separated), which a user may also set themselves.
The working directory is never searched for code: `python -m trimpi` drops it from `sys.path`
(`trimpi.__main__`), as the `trimpi` command never had it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from trimpi.errors import ConfigError

TRUST_ENV = "TRIMPI_TRUST_CODE"
TRUST_FLAG = "--trust-code"
_SPEC = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")
_trusted: set[str] = set()


def check_spec(spec: str, what: str = "custom code") -> str:
    """`spec` if it is a well-formed "package.module:function"; a one-line ConfigError otherwise."""
    if not isinstance(spec, str) or not _SPEC.fullmatch(spec.strip()):
        raise ConfigError(f"{what} {spec!r}: expected 'package.module:function'")
    return spec.strip()


def trust_code(specs: Iterable[str]) -> None:
    """Trust these functions for this process and the jobs it starts (the user's `--trust-code`)."""
    for spec in specs:
        _trusted.add(check_spec(spec, TRUST_FLAG))
    if _trusted:
        os.environ[TRUST_ENV] = ",".join(sorted(trusted_code()))


def trusted_code() -> set[str]:
    """Every function the user trusted: on this command line, or in $TRIMPI_TRUST_CODE."""
    env = {s.strip() for s in os.environ.get(TRUST_ENV, "").split(",") if s.strip()}
    return _trusted | env


def require_trusted(spec: str, what: str = "custom code") -> None:
    """Refuse, in one line saying what to do, a function the user did not trust."""
    if spec not in trusted_code():
        raise ConfigError(f"{what} {spec!r} is Python code, and trimpi runs code only when you trust it by name: "
                          f"pass {TRUST_FLAG} {spec} if you wrote it or have read it")


def forget_trust() -> None:
    """Trust nothing again (tests; a library caller starting over)."""
    _trusted.clear()
    os.environ.pop(TRUST_ENV, None)
