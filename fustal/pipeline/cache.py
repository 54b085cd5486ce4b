"""Content-addressed stage artifacts.

A stage's artifacts live in ``<cache_dir>/<stage>/<key>/`` where ``key`` hashes everything that
determines them (:mod:`fustal.pipeline.keys` says what enters it: the config fields the stage
reads, its upstream keys, a fingerprint of the code it runs from :func:`code_fingerprint`), so
editing any file a stage executes recomputes it and everything downstream. ``manifest.json`` is
written last and lists every artifact with its size and sha256: a stage is reused only when the
manifest exists and every file matches it, so nothing half-written or corrupted is ever read
back. An unfinished stage keeps its training checkpoint there, and the next run with the same key
resumes from it. A file lock serializes runs (e.g. parallel sweep jobs) that share a key; under
DDP rank 0 takes it and tells the other ranks (:func:`stage_lock`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import os
import shutil
import sysconfig
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from functools import cache
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

import fustal
from fustal.io import read_json, write_json
from fustal.pipeline.keys import COSMETIC_MODULES
from fustal.training.distributed import barrier, broadcast_from_zero, is_distributed, is_global_zero

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# the file lock of an entry (kept when the entry is discarded)
LOCK = ".lock"
# Seconds between rank 0's attempts at a stage lock another run holds (DDP).
LOCK_POLL_S = 1.0


PACKAGE = fustal.__name__
PACKAGE_DIR = Path(fustal.__file__).resolve().parent
STDLIB_DIR = Path(sysconfig.get_paths()["stdlib"]).resolve()


def module_path(module: str, package_dir: Path | None = None) -> Path | None:
    """The source file of ``module`` (``fustal.x.y``) under ``package_dir`` (default: the
    installed package; None: no such module)."""
    parts = module.split(".")[1:]
    base = (package_dir or PACKAGE_DIR).joinpath(*parts)
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def source_file(module: str, package_dir: Path | None = None) -> Path:
    """:func:`module_path`, a missing module being a ``ValueError``."""
    path = module_path(module, package_dir)
    if path is None:
        raise ValueError(f"code fingerprint: no module {module} in {package_dir or PACKAGE_DIR}")
    return path


@cache
def direct_imports(source: bytes, module: str, package_dir: Path) -> tuple[str, ...]:
    """The fustal modules (and the packages they sit in) that ``source`` of ``module`` imports
    anywhere, also inside functions: lazy imports run too."""
    parts = module.split(".")
    here = parts if source_file(module, package_dir).name == "__init__.py" else parts[:-1]
    names: list[str] = []
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            anchor = here[: len(here) - node.level + 1] if node.level else []
            base = ".".join([*anchor, *([node.module] if node.module else [])])
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    found = {
        prefix
        for name in names
        if name.split(".")[0] == PACKAGE
        for prefix in (".".join(name.split(".")[:d]) for d in range(1, name.count(".") + 2))
        if module_path(prefix, package_dir) is not None  # importing a.b.c runs a, a.b too
    }
    return tuple(sorted(found - {module}))


def import_closure(
    roots: Iterable[str],
    package_dir: Path | None = None,
    excluded: Iterable[str] = COSMETIC_MODULES,
) -> list[str]:
    """Every fustal module that importing ``roots`` runs (the transitive closure of their
    imports, read from the source under ``package_dir``), without the ``excluded`` ones (whose
    own imports are not followed either), sorted."""
    excluded, package_dir = tuple(excluded), package_dir or PACKAGE_DIR
    seen: set[str] = set()
    todo = [PACKAGE, *roots]
    while todo:
        module = todo.pop()
        if module in seen or any(module == e or module.startswith(e + ".") for e in excluded):
            continue
        seen.add(module)
        todo.extend(
            direct_imports(source_file(module, package_dir).read_bytes(), module, package_dir)
        )
    return sorted(seen)


def targets(node: Any) -> list[str]:
    """Every ``_target_`` string of a plain config subtree, depth first."""
    if not isinstance(node, list | dict):
        return []
    values = node.values() if isinstance(node, dict) else node
    found = [t for value in values for t in targets(value)]
    target = node.get("_target_") if isinstance(node, dict) else None
    return [*found, target] if isinstance(target, str) else found


def target_modules(node: Any) -> list[str]:
    """The fustal modules that the ``_target_`` entries of a plain config subtree name (code a
    stage reaches only through ``hydra.utils.instantiate``): each target's longest prefix that
    is a module."""
    named = []
    for target in targets(node):
        if target.startswith(PACKAGE + "."):
            parts = target.split(".")
            prefixes = (".".join(parts[:d]) for d in range(len(parts), 0, -1))
            named.append(next(p for p in prefixes if module_path(p) is not None))
    return named


def user_target_files(node: Any) -> list[Path]:
    """The source files of the user's own modules that the ``_target_`` entries of a plain config
    subtree name (a filter or generator in the user's file, docs/extending.md): modules outside
    fustal, the standard library and installed packages. Only that file is hashed, not what it
    imports."""
    files = []
    for target in targets(node):
        if target.startswith(PACKAGE + "."):
            continue
        parts = target.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            try:
                spec = importlib.util.find_spec(".".join(parts[:depth]))
            except (ImportError, ValueError):
                continue
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                path = Path(spec.origin).resolve()
                installed = {"site-packages", "dist-packages"} & set(path.parts)
                if not installed and not path.is_relative_to(STDLIB_DIR):
                    files.append(path)
                break
    return files


def code_fingerprint(
    roots: Iterable[str],
    package_dir: Path | None = None,
    user_files: Iterable[Path] = (),
) -> str:
    """sha256 of the package version and the source of every module of :func:`import_closure`
    of ``roots`` and of ``user_files``: what a stage's artifacts depend on besides its
    config."""
    digest = hashlib.sha256(fustal.__version__.encode())
    for module in import_closure(roots, package_dir):
        digest.update(f"{module}\n".encode() + source_file(module, package_dir).read_bytes())
    for path in sorted(set(user_files)):
        digest.update(f"{path}\n".encode() + path.read_bytes())
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

    @contextmanager
    def lock(self, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the entry's file lock. While another process holds it, block; or, with
        ``waiting``, retry after each call of ``waiting()``."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path / LOCK)
        if waiting is None:
            lock.acquire()
        else:
            while True:
                try:
                    lock.acquire(blocking=False)
                    break
                except Timeout:
                    waiting()
        try:
            yield
        finally:
            lock.release()

    def complete(self) -> bool:
        """True when the manifest exists and every artifact matches its size and hash; a
        mismatch (truncated, corrupted, missing file) discards the entry with a warning."""
        manifest = self.path / MANIFEST
        if not (self.reusable and manifest.is_file()):
            return False
        try:
            files = read_json(manifest)["files"]
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
