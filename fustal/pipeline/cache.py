"""Content-addressed stage artifacts.

A stage's artifacts live in ``<cache_dir>/<stage>/<key>/`` where ``key`` hashes everything that
determines them: the config fields the stage reads, the dataset identity, the seed, the keys of
its upstream stages and a fingerprint of the code it runs (:func:`code_fingerprint`: the source of
every fustal module its run imports, read as the import closure of the stage's module from the
source, minus the short :data:`COSMETIC_MODULES` list, and the package version), so editing any
file a stage executes recomputes it and everything downstream. ``manifest.json`` is written last
and lists every artifact with its size and sha256: a stage is reused only when the manifest
exists and every file matches it, so nothing half-written or corrupted is ever read back. An
unfinished stage keeps its training checkpoint there, and the next run with the same key resumes
from it. A file lock serializes runs (e.g. parallel sweep jobs) that share a key; under DDP rank 0
takes it and tells the other ranks (:func:`stage_lock`).
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from functools import cache
from pathlib import Path
from typing import Any

import fustal
from fustal.io import read_json, write_json
from fustal.training.distributed import (
    barrier,
    broadcast_from_zero,
    is_distributed,
    is_global_zero,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# the file lock of an entry (kept when the entry is discarded)
LOCK = ".lock"
# Seconds between rank 0's attempts at a stage lock another run holds (DDP).
LOCK_POLL_S = 1.0


# fustal modules that cannot change what a stage computes: console output, progress, logging to
# experiment trackers, pictures. Their source is left out of the code fingerprints (a package
# stands for all of its modules); everything else a stage's run imports is in.
COSMETIC_MODULES = (
    "fustal.training.progress",
    "fustal.training.quiet",
    "fustal.training.loggers",
    "fustal.metrics.table",
    "fustal.pipeline.pictures",
    "fustal.pipeline.summary",
    "fustal.viz",
)
PACKAGE = fustal.__name__
PACKAGE_DIR = Path(fustal.__file__).resolve().parent


def module_path(module: str, package_dir: Path | None = None) -> Path | None:
    """The source file of ``module`` (``fustal.x.y``) under ``package_dir`` (default: the
    installed package; None: no such module)."""
    parts = module.split(".")[1:]
    base = (package_dir or PACKAGE_DIR).joinpath(*parts)
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


@cache
def direct_imports(
    source: bytes, module: str, is_package: bool, package_dir: Path
) -> tuple[str, ...]:
    """The fustal modules that ``source`` (of ``module``) imports anywhere (also inside
    functions: lazy imports run too), with the packages they sit in."""
    tree = ast.parse(source, module)
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] != PACKAGE:
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
                prefix = ".".join(parts[:depth])
                if module_path(prefix, package_dir) is not None:
                    found.add(prefix)
    found.discard(module)
    return tuple(sorted(found))


def cosmetic(module: str, excluded: Iterable[str] = COSMETIC_MODULES) -> bool:
    return any(module == e or module.startswith(e + ".") for e in excluded)


def import_closure(
    roots: Iterable[str],
    package_dir: Path | None = None,
    excluded: Iterable[str] = COSMETIC_MODULES,
) -> list[str]:
    """Every fustal module that importing ``roots`` runs (the transitive closure of their
    imports, read from the source under ``package_dir``, lazy imports included), without the
    ``excluded`` ones (whose own imports are not followed either), sorted."""
    excluded = tuple(excluded)
    package_dir = package_dir or PACKAGE_DIR
    seen: set[str] = set()
    todo = [PACKAGE, *roots]
    while todo:
        module = todo.pop()
        if module in seen or cosmetic(module, excluded):
            continue
        path = module_path(module, package_dir)
        if path is None:
            raise ValueError(f"code fingerprint: no module {module} in {package_dir}")
        seen.add(module)
        is_package = path.name == "__init__.py"
        todo.extend(direct_imports(path.read_bytes(), module, is_package, package_dir))
    return sorted(seen)


def target_modules(node: Any) -> list[str]:
    """The fustal modules named by the ``_target_`` entries of a (plain) config subtree, e.g. a
    scheduler or callback that the stage's code only reaches through ``hydra.utils.instantiate``:
    the longest prefix of each target that is a module."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str) and value.startswith(PACKAGE + "."):
                parts = value.split(".")
                for depth in range(len(parts), 0, -1):
                    if module_path(".".join(parts[:depth])) is not None:
                        found.append(".".join(parts[:depth]))
                        break
            else:
                found.extend(target_modules(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(target_modules(value))
    return found


def code_fingerprint(
    roots: Iterable[str],
    package_dir: Path | None = None,
    excluded: Iterable[str] = COSMETIC_MODULES,
) -> str:
    """sha256 of the source of every module of :func:`import_closure` of ``roots`` and the
    package version: what a stage's artifacts depend on besides its config."""
    digest = hashlib.sha256(fustal.__version__.encode())
    for module in import_closure(roots, package_dir, excluded):
        path = module_path(module, package_dir)
        assert path is not None
        digest.update(f"{module}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


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
        with open(self.path / LOCK, "w") as handle:
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
            if child.name == LOCK:
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


@contextmanager
def stage_lock(sdir: StageDir) -> Iterator[bool]:
    """Hold a stage dir for this run; yields whether its artifacts can be reused.

    Rank 0 takes the file lock (serializing runs that share the dir) and checks the entry (a
    corrupt one is discarded there); every rank gets that verdict. While another run holds the
    lock, rank 0 tells the other ranks so every ``LOCK_POLL_S`` seconds: one collective waiting
    for the whole of another run's training would time out. Leaving the block waits for every
    rank, so what rank 0 wrote inside it is there for all of them afterwards."""
    rank_zero = is_global_zero()

    def waiting() -> None:
        broadcast_from_zero(False)
        time.sleep(LOCK_POLL_S)

    with sdir.lock(waiting if is_distributed() else None) if rank_zero else nullcontext():
        while not broadcast_from_zero(rank_zero):  # rank 0 holds the lock here: True ends it
            pass
        yield broadcast_from_zero(sdir.complete() if rank_zero else False)
        barrier()
