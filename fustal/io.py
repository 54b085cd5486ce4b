"""Atomic file output and checked JSON input.

Writing into a folder that cannot take the file (disk full, quota, read-only file system, no
permission, a path component that is a regular file) raises :class:`FustalError` naming the
target path, so the entry points print one line instead of a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from fustal.errors import FustalError

# errno values that mean "this path cannot be written", whatever the code around the write does
WRITE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.EISDIR,
        errno.ENAMETOOLONG,
    }
)


@contextmanager
def reported_writes(path: str | os.PathLike) -> Iterator[None]:
    """Turn an :class:`OSError` in :data:`WRITE_ERRNOS` raised inside the block into a
    :class:`FustalError` ``cannot write <path>: <reason>``."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        raise FustalError(f"cannot write {path}: {err.strerror or err}") from err


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` if needed and check that a file can be written in it."""
    path = Path(path)
    with reported_writes(path):
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    return path


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def _replacing(path: Path, suffix: str) -> Iterator[tuple[int, str]]:
    """A temp file beside ``path`` (its descriptor and name) that replaces ``path`` when the
    block succeeds; on any exception it is removed, so ``path`` is either the old file or the
    complete new one, never a half-written one."""
    with reported_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        try:
            os.fchmod(fd, _default_mode())
            yield fd, tmp
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``
    (see :func:`_replacing`)."""
    with _replacing(Path(path), ".tmp") as (fd, _), os.fdopen(fd, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON atomically (numpy scalars and arrays are converted). Encoded with
    ``json.dumps``: only it uses the C encoder (``indent=None``); ``json.dump`` never does."""
    text = json.dumps(data, indent=indent, default=_to_builtin)
    with atomic_open(path, "w") as handle:
        handle.write(text + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[str], None]) -> None:
    """Atomically produce ``path`` with a writer that takes a temp file name (e.g. ``np.save``)."""
    path = Path(path)
    with _replacing(path, path.suffix) as (fd, tmp):
        os.close(fd)
        writer(tmp)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Atomically write one ``.npy`` file (no pickled objects)."""
    write_with(path, lambda tmp: np.save(tmp, array, allow_pickle=False))


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or malformed file into a one-line :class:`FustalError`."""
    path = Path(path)
    if not path.is_file():
        raise FustalError(f"{what} not found: {path}")
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise FustalError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise FustalError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except OSError as err:
        raise FustalError(f"{path}: cannot read {what} ({err.strerror or err})") from None
