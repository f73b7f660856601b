"""File I/O shared by every builder: JSON/JSONL, atomic writes, staged output directories."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trimpi.errors import DataError, TrimpiError


def dumps(obj: Any) -> str:
    """Canonical JSON: sorted keys, no NaN, UTF-8 — same object, same bytes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False, indent=indent)
    write_bytes_atomic(path, (text + "\n").encode())


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    lines = [dumps(r) + "\n" for r in rows]
    write_bytes_atomic(path, "".join(lines).encode())
    return len(lines)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed JSON ({e})") from None


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: malformed JSON line ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line")
            yield row


def read_jsonl(path: str | Path) -> list[dict]:
    return list(iter_jsonl(path))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Check that `out` may be written; return its resolved path. Nothing is deleted here."""
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise TrimpiError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise TrimpiError(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
    parent = out.parent
    parent_exists = parent
    while not parent_exists.exists():
        parent_exists = parent_exists.parent
    if not parent_exists.is_dir():
        raise TrimpiError(f"{out}: cannot be created because {parent_exists} is not a directory")
    if not os.access(parent_exists, os.W_OK):
        raise TrimpiError(f"{out}: parent directory {parent_exists} is not writable")
    return out


@contextlib.contextmanager
def staged_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success move it into place, on failure remove it.

    An interrupted build (exception, Ctrl-C) never leaves a half-written dataset at `out`.
    """
    out = prepare_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, trash / "old")
        os.replace(stage, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(stage, out)


def lock_path(out: str | Path) -> Path:
    """The lock file guarding directory `out`: a hidden sibling, so it outlives `out` being replaced."""
    out = Path(out).resolve()
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def exclusive(out: str | Path) -> Iterator[None]:
    """Hold the lock of directory `out` for the duration; a second holder fails at once.

    The lock is an advisory `flock` on `lock_path(out)`, released by the OS when the process
    dies, so a killed run never leaves `out` locked. The holder's pid is written into the file
    for the error message.
    """
    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise TrimpiError(f"{Path(out)}: cannot create the lock file {path} ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise TrimpiError(f"{Path(out)}: in use by another trimpi process (pid {holder}); "
                              "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
