"""`python -m trimpi`: the `trimpi` command. Python puts the working directory first on sys.path under
`-m`; it is removed before anything else is imported, so a `.py` file lying beside a dataset or in a run
folder is never imported as code (`trimpi.trust`). The `trimpi` command never had it."""

import os
import sys


def _without_working_directory(path: list[str]) -> list[str]:
    cwd = os.path.realpath(os.getcwd())
    return [p for p in path if p not in ("", ".") and os.path.realpath(p) != cwd]


sys.path[:] = _without_working_directory(sys.path)

from trimpi.cli import main  # noqa: E402

main()
