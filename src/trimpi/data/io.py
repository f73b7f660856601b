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


def umask() -> int:
    """The process's umask: read from /proc on Linux (setting it to read it would race other threads'
    file creation), else set and restored at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of an ordinary new file: 0644 under the usual umask 022."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Mode of an ordinary new directory: 0755 under the usual umask 022."""
    return 0o777 & ~umask()


def make_temp_file(directory: Path, prefix: str, suffix: str = "") -> tuple[int, str]:
    """`tempfile.mkstemp` with the permissions of an ordinary file (mkstemp alone gives 0600)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.fchmod(fd, file_mode())
    return fd, tmp


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """`tempfile.mkdtemp` with the permissions of an ordinary directory (mkdtemp alone gives 0700)."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    path.chmod(dir_mode())
    return path


PRIVATE_MODES = {0o600, 0o700}  # what mkstemp / mkdtemp (and safetensors' writer) give, whatever the umask


def ordinary_modes(directory: str | Path) -> None:
    """Give files and directories under `directory` that writers made private (safetensors writes weights
    0600) the mode of an ordinary one; modes set on purpose (0755 scripts, 0640 files) are kept."""
    directory = Path(directory)
    for path in [directory, *directory.rglob("*")]:
        if not path.is_symlink() and path.stat().st_mode & 0o777 in PRIVATE_MODES:
            path.chmod(dir_mode() if path.is_dir() else file_mode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = make_temp_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise TrimpiError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise TrimpiError(f"{path}: cannot write ({e.strerror})") from None
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


def numbered_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file; errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding="utf-8") as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: malformed JSON line ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object per line")
                yield n, row
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    for _, row in numbered_jsonl(path):
        yield row


def read_jsonl(path: str | Path) -> list[dict]:
    return list(iter_jsonl(path))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_writable(directory: str | Path, what: str | Path | None = None) -> Path:
    """Raise a one-line error unless files can be written in `directory` (created if missing).

    Tried, not guessed: `os.access` says yes to root on read-only places such as /sys.
    `what` names the output in the message (default: `directory`)."""
    directory = Path(directory).resolve()
    what = what or directory
    base = directory
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise TrimpiError(f"{what}: cannot be created because {base} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=base, prefix=".trimpi-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise TrimpiError(f"{what}: cannot write in {base} ({e.strerror})") from None
    return directory


def image_problem(path: str | Path) -> str | None:
    """Why the image file at `path` cannot be decoded, or None when it decodes (a training batch would)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
    except UnidentifiedImageError:
        return "not an image file" if Path(path).stat().st_size else "empty file"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return str(e) or type(e).__name__
    return None


OWNER_MARK = ".trimpi"  # in every directory a trimpi command writes: {"written_by": "trimpi", "command": ...}
# Outputs written before the mark existed are recognised by a file only trimpi writes, with its shape.
_LEGACY_MARKS = {"trimpi_stage.json": (), "manifest.json": ("files", "config"), "run.json": ("steps", "methods"),
                 "scores.json": ("options",)}


def mark_owned(directory: str | Path, command: str = "trimpi") -> None:
    """Mark `directory` as written by trimpi (so `--overwrite` may later replace it)."""
    write_json(Path(directory) / OWNER_MARK, {"command": command, "written_by": "trimpi"})


def is_owned(directory: str | Path) -> bool:
    """Whether `directory` carries trimpi's mark (or is an output written before the mark existed)."""
    directory = Path(directory)
    if (directory / OWNER_MARK).is_file():
        return True
    for name, keys in _LEGACY_MARKS.items():
        path = directory / name
        if path.is_file() and not path.is_symlink():
            if not keys:
                return True
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and all(k in data for k in keys):
                    return True
    return False


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def inside(root: str | Path, rel: str, where: str, base: str | Path | None = None) -> Path:
    """`base / rel` resolved (`base` defaults to `root`), refusing in one line naming `where` a path that leads
    out of `root`: an absolute path elsewhere, a `..` that climbs out, or a symbolic link pointing out. Files
    a dataset, policy or examples file names stay inside its folder."""
    root = Path(root).resolve()
    start = Path(base).resolve() if base is not None else root
    path = (start / rel).resolve()
    if not _inside(path, root):
        lexical = Path(os.path.normpath(start / rel))
        how = ("an absolute path" if os.path.isabs(rel) else
               "a symbolic link" if _inside(lexical, root) else "'..'")
        raise DataError(f"{where}: {rel!r} leads outside {root} ({how}); files must lie inside that folder")
    return path


def claim_output(out: str | Path, overwrite: bool = False, inputs: dict[str, Any] | None = None) -> Path:
    """The checks of every command that writes directory `out`, before it writes; its resolved path.

    `out` must be a directory (or not exist) and, when not empty, trimpi's own (`is_owned`): a folder
    of other files is refused, with or without --overwrite. `--overwrite` never replaces the working
    directory, a parent of it, or a directory holding an input of the same command (`inputs`: {flag:
    path or paths}). Nothing is written or deleted here."""
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise TrimpiError(f"{out}: exists and is not a directory")
    if overwrite and _inside(Path.cwd().resolve(), out):
        raise TrimpiError(f"{out}: is the working directory or a parent of it; --overwrite never replaces those "
                          "(choose another --out)")
    for flag, paths in (inputs or {}).items() if overwrite else ():
        for path in paths if isinstance(paths, list | tuple) else [paths]:
            if path is not None and _inside(Path(path).resolve(), out):
                raise TrimpiError(f"{out}: holds {path}, an input of this command ({flag}); choose another --out")
    if out.is_dir() and not is_owned(out) and any(out.iterdir()):
        raise TrimpiError(f"{out}: not empty and not written by trimpi (no {OWNER_MARK} mark); trimpi writes only "
                          "into a new or empty directory or its own output (choose another --out)")
    return out


def prepare_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Check that `out` may be written (`claim_output`) and replaced; return its resolved path. Nothing is
    deleted here."""
    out = claim_output(out, overwrite)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise TrimpiError(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
    check_writable(out.parent, out)
    return out


STAGE_KINDS = ("partial", "old")  # .NAME.partial-PID-xxxx: a build in progress; .NAME.old-PID-xxxx: being replaced


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def stale_stages(out: Path) -> list[Path]:
    """Staging directories of `out` left by builds whose process is gone (SIGKILL, power loss)."""
    stale = []
    for kind in STAGE_KINDS:
        for path in out.parent.glob(f".{out.name}.{kind}-*"):
            pid = path.name.removeprefix(f".{out.name}.{kind}-").split("-")[0]
            if path.is_dir() and not (pid.isdigit() and _pid_alive(int(pid))):
                stale.append(path)
    return sorted(stale)


@contextlib.contextmanager
def staged_directory(out: str | Path, overwrite: bool = False, command: str = "trimpi") -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success mark it as trimpi's (`mark_owned`, after the build's own
    files) and move it into place, on failure remove it. Only trimpi's own or an empty `out` is replaced.

    The whole build holds `exclusive(out)`, so a second build of the same `out` fails at once
    instead of replacing the first one's result. An interrupted build (exception, Ctrl-C) never
    leaves a half-written dataset at `out`; what a killed one left is removed by the next build.
    """
    out = prepare_output_dir(out, overwrite)
    with exclusive(out):
        out = prepare_output_dir(out, overwrite)  # again: another build may have finished meanwhile
        for path in stale_stages(out):
            shutil.rmtree(path, ignore_errors=True)
        stage = make_temp_dir(out.parent, prefix=f".{out.name}.partial-{os.getpid()}-")
        try:
            yield stage
            mark_owned(stage, command)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        if out.exists():
            trash = make_temp_dir(out.parent, prefix=f".{out.name}.old-{os.getpid()}-")
            os.replace(out, trash / "old")
            os.replace(stage, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(stage, out)


def lock_path(out: str | Path) -> Path:
    """The lock file guarding directory `out`: a hidden sibling, so it outlives `out` being replaced."""
    out = Path(out).resolve()
    return out.parent / f".{out.name}.lock"


def _open_lock(path: Path, out: str | Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as e:
        raise TrimpiError(f"{Path(out)}: cannot create the lock file {path} ({e.strerror})") from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


_HELD: set[Path] = set()  # lock files this process holds


@contextlib.contextmanager
def owned_output(out: str | Path, command: str, overwrite: bool = False, inputs: dict[str, Any] | None = None,
                 lock: bool = True) -> Iterator[Path]:
    """For a command that writes into directory `out` (training, evaluation): `claim_output`, then hold
    `exclusive(out)` (unless `lock` is False: the other processes of one distributed job), create `out`
    and mark it as trimpi's; yields its resolved path."""
    out = check_writable(claim_output(out, overwrite, inputs))
    with exclusive(out) if lock else contextlib.nullcontext():
        out = claim_output(out, overwrite, inputs)  # again: another process may have written it meanwhile
        out.mkdir(parents=True, exist_ok=True)
        if not (out / OWNER_MARK).is_file():
            mark_owned(out, command)
        yield out


@contextlib.contextmanager
def exclusive(out: str | Path) -> Iterator[None]:
    """Hold the lock of directory `out` for the duration; a second holder fails at once.

    The lock is an advisory `flock` on `lock_path(out)`, released by the OS when the process
    dies, so a killed run never leaves `out` locked. The holder's pid is written into the file
    for the error message. The holder removes the file when it is done; a process that locked
    a file removed meanwhile tries again on the new one. Nested use in one process is allowed.
    """
    path = lock_path(out)
    if path in _HELD:  # this process holds it already (a build inside a locked command)
        yield
        return
    while True:
        fd = _open_lock(path, out)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TrimpiError(f"{Path(out)}: in use by another trimpi process (pid {holder}); "
                              "wait for it to finish or stop it") from None
        if _same_file(fd, path):
            break
        os.close(fd)
    _HELD.add(path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        _HELD.discard(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # releases the flock
