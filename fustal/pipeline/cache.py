"""Content-addressed stage artifacts.

A stage's artifacts live in ``<cache_dir>/<stage>/<key>/`` where ``key`` hashes the config that
determines them. ``manifest.json`` is written last and lists every artifact with its size and
sha256: a stage is reused only when the manifest exists and every file matches it, so nothing
half-written or corrupted is ever read back. An unfinished stage keeps its ``last.ckpt`` there,
and the next run with the same key resumes from it. A file lock serializes runs (e.g. parallel
sweep jobs) that share a key.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fustal.io import read_json, write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class StageDir:
    """One stage's artifact folder (a cache entry, or the run dir when caching is off)."""

    def __init__(self, path: str | Path, stage: str, key: str, reusable: bool = True) -> None:
        self.path = Path(path)
        self.stage = stage
        self.key = key
        self.reusable = reusable

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @contextmanager
    def lock(self, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the entry's file lock. While another process holds it, block; or, with
        ``waiting``, retry after each call of ``waiting()``."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if waiting else 0))
                    break
                except BlockingIOError:
                    assert waiting is not None
                    waiting()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def complete(self) -> bool:
        """True when the manifest exists and every artifact matches its size and hash; a
        mismatch (truncated, corrupted, missing file) discards the entry with a warning."""
        manifest = self.path / MANIFEST
        if not (self.reusable and manifest.is_file()):
            return False
        try:
            record = read_json(manifest)
            files = record["files"]
        except Exception:  # noqa: BLE001 - any unreadable manifest means "recompute"
            files = None
        bad = (
            ["manifest"]
            if files is None
            else [
                name
                for name, meta in files.items()
                if not (self.path / name).is_file()
                or (self.path / name).stat().st_size != meta["size"]
                or file_digest(self.path / name) != meta["sha256"]
            ]
        )
        if bad:
            log.warning(
                "%s: cached %s artifact is corrupt (%s); recomputing",
                self.path,
                self.stage,
                ", ".join(bad),
            )
            self.discard()
            return False
        return True

    def discard(self) -> None:
        """Remove every artifact (keeps the lock file)."""
        for child in self.path.iterdir():
            if child.name == ".lock":
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def commit(self, files: list[str], record: dict[str, Any]) -> None:
        """Write the manifest (last): the stage is complete."""
        entries = {
            name: {
                "size": (self.path / name).stat().st_size,
                "sha256": file_digest(self.path / name),
            }
            for name in files
        }
        write_json(
            self.path / MANIFEST,
            {"stage": self.stage, "key": self.key, "files": entries, "config": record},
        )

    def export(self, names: list[str], run_dir: Path) -> None:
        """Copy artifacts into the run dir (atomically: copy to a temp name, then rename)."""
        if run_dir.resolve() == self.path.resolve():
            return
        for name in names:
            tmp = run_dir / f".{name}.tmp"
            shutil.copyfile(self.path / name, tmp)
            os.replace(tmp, run_dir / name)
