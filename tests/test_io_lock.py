"""The directory lock: a second holder fails naming the first one's pid; nested use; no file left."""

import subprocess
import sys

import pytest

from trimpi.data.io import exclusive
from trimpi.errors import TrimpiError


def test_second_holder_fails(tmp_path):
    out = tmp_path / "ds"
    code = f"from trimpi.data.io import exclusive\nimport time\nwith exclusive({str(out)!r}):\n    print('ok', flush=True); time.sleep(30)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ok"
    with pytest.raises(TrimpiError, match=f"pid {p.pid}"), exclusive(out):
        pass
    p.kill()
    p.wait()
    with exclusive(out):
        pass


def test_lock_is_reentrant_in_one_process_and_leaves_no_file(tmp_path):
    from trimpi.data.io import lock_path

    out = tmp_path / "ds"
    with exclusive(out):
        with exclusive(out):
            assert lock_path(out).is_file()
        assert lock_path(out).is_file()
    assert list(tmp_path.iterdir()) == []
