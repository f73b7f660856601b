import subprocess, sys, time, pytest
from trimpi.data.io import exclusive
from trimpi.errors import TrimpiError
def test_second_holder_fails(tmp_path):
    out = tmp_path / "ds"
    code = f"from trimpi.data.io import exclusive\nimport time\nwith exclusive({str(out)!r}):\n    print('ok', flush=True); time.sleep(30)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ok"
    with pytest.raises(TrimpiError, match=f"pid {p.pid}"):
        with exclusive(out):
            pass
    p.kill(); p.wait()
    with exclusive(out):
        pass
