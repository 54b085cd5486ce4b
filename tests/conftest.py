"""Shared fixtures and helpers: paths of the bundled annotations, a small synthetic dataset,
offline W&B, the composed train config at the ``debug`` scale and in-process runs of it, and the
two runners of the command line: :func:`run_fustal` (a new interpreter, for tests whose subject
is a fresh process: a run with its own hash seed, the real command that the shortcuts are
compared with) and the :func:`forked` fixture (a process forked from a server forked from the
test process before any test ran, with fustal imported, for every other CLI run: a cold start
importing torch and Lightning costs seconds; the processes such a run starts, DDP ranks and
joblib workers, are new interpreters)."""

from __future__ import annotations

import copy
import faulthandler
import importlib
import io
import multiprocessing.util
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe, wait
from pathlib import Path
from typing import NoReturn

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

from fustal.config import CONFIG_DIR, register_resolvers
from fustal.data.synthetic import SyntheticConfig, ensure_synthetic
from fustal.training.quiet import IGNORED_WARNINGS

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
ANNOTATIONS_DIR = REPO_ROOT / "data" / "annotations"

# 3 classes, 8 train / 4 test videos of 20-40 s, 16-dim features: generated in well under 1 s
SMALL_SYNTHETIC = SyntheticConfig(
    num_classes=3,
    train_videos=8,
    test_videos=4,
    min_duration=20.0,
    max_duration=40.0,
    feature_dim=16,
)


@pytest.fixture(scope="session")
def synthetic_config() -> SyntheticConfig:
    """The parameters of :func:`synthetic_root`."""
    return SMALL_SYNTHETIC


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a small synthetic dataset in both real layouts (read-only: do not modify)."""
    return ensure_synthetic(SMALL_SYNTHETIC, tmp_path_factory.mktemp("synthetic"))


# the modules by their time in the suite, longest first, so that no long module ends the run on
# one worker while the other idles: ``make test`` runs ``--dist loadscope --no-loadscope-reorder``
# (each module on one worker, so its module fixtures are built once; xdist hands out the modules
# in collection order); the modules not listed take a few seconds each and follow
LONG_FIRST = (
    "test_resume",
    "test_validation",
    "test_config",
    "test_bad_inputs",
    "test_framework",
    "test_pipeline",
    "test_ddp",
    "test_entry_points",
    "test_learning",
    "test_extract",
    "test_extending",
    "test_console",
    "test_fusion",
    "test_cache",
    "test_viz",
    "test_custom_dataset",
    "test_student_module",
    "test_data",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")

    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(module(item), len(rank)))


class ParsedYaml:
    """``OmegaConf.load`` of a file object, each text parsed once per test process: every Hydra
    compose reads and parses the same few dozen YAML files with PyYAML's pure-Python parser
    (about a tenth of a compose), and the suite composes hundreds of times. A load returns a
    copy of the config parsed from exactly this text, as a fresh load does."""

    def __init__(self) -> None:
        self.load = OmegaConf.load
        self.parsed: dict[str, DictConfig | ListConfig] = {}

    def __call__(self, file_: object) -> DictConfig | ListConfig:
        read = getattr(file_, "read", None)
        if read is None:  # a path: OmegaConf opens it
            return self.load(file_)  # type: ignore[arg-type]
        text = read()
        if text not in self.parsed:
            self.parsed[text] = self.load(io.StringIO(text))
        return copy.deepcopy(self.parsed[text])


def pytest_configure(config: pytest.Config) -> None:
    """Filter the library warnings that fustal filters for its users: pytest records warnings
    per test with its own filters, which the ``warnings`` filters set by
    :func:`fustal.training.quiet.quiet_libraries` do not reach. Parse each config file once
    (:class:`ParsedYaml`; in this process only, not in the commands it starts)."""
    for message, category in IGNORED_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}")
    OmegaConf.load = ParsedYaml()  # type: ignore[method-assign]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start this test process's :class:`Forkserver` after collection, before any test runs,
    when a collected test runs commands forked (xdist's controller collects nothing)."""
    if any("forked" in item.fixturenames for item in session.items):
        FORKSERVER.append(Forkserver())


# the debug configuration on the command line (subprocess runs)
DEBUG = ["debug=default"]

# the student of debug=default, for runs without it
TINY_STUDENT = [
    "student.epochs_pseudo=2",
    "student.epochs_distill=1",
    "student.val_every=0",
    "student.module.net.embd_dim=16",
    "student.module.net.fpn_dim=16",
    "student.module.net.head_dim=16",
    "student.module.net.sgp_mlp_dim=32",
]

# +experiment=activitynet13_synthetic at a size of seconds (with debug=False: the experiment's
# own sizes would override those of debug=default)
ANET_TINY = [
    "+experiment=activitynet13_synthetic",
    "dataset.synthetic.num_classes=3",
    "dataset.synthetic.train_videos=10",
    "dataset.synthetic.test_videos=5",
    "dataset.synthetic.min_duration=20",
    "dataset.synthetic.max_duration=40",
    "dataset.synthetic.feature_dim=16",
    "dataset.synthetic.resized_steps=32",
    "generator.max_steps=20",
    "generator.val_every=10",
    "generator.module.net.hidden_dim=32",
    "generator.module.proposal_workers=0",
    "generator.data.batch_size=4",
    *TINY_STUDENT,
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "plot_videos=0",
]


def compose_train(
    tmp: Path, *overrides: str, config: str = "train", debug: bool = True
) -> DictConfig:
    """``conf/<config>.yaml`` at the debug scale (``debug=False``: the default scale) with data,
    cache and run dir under ``tmp`` (run dir ``tmp/run`` unless an override sets
    ``paths.output_dir``)."""
    register_resolvers()
    defaults = [
        *(DEBUG if debug else []),
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"paths.output_dir={tmp / 'run'}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config, overrides=[*defaults, *overrides])


def train(tmp: Path, *overrides: str, debug: bool = True) -> dict:
    """Run the pipeline in this process at the debug scale (``debug=False``: the default
    scale); returns its metrics."""
    from fustal.pipeline.run import run_pipeline

    return run_pipeline(compose_train(tmp, *overrides, debug=debug))


@dataclass(frozen=True)
class DebugRun:
    """A finished ``debug=default`` pipeline run (read-only: tests copy what they change)."""

    data: Path  # its data dir
    cache: Path  # its stage cache: one generator and one student entry
    run: Path  # its run dir
    metrics: dict

    def seed(self, tmp: Path) -> str:
        """Copy the stage cache to ``tmp/cache``; returns the data-dir override under which a
        run with ``tmp``'s cache finds the entries (the data path is part of the keys)."""
        shutil.copytree(self.cache, tmp / "cache")
        return f"paths.data_dir={self.data}"


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory: pytest.TempPathFactory) -> DebugRun:
    """The default debug pipeline, trained once per test process, for tests whose subject is
    not that training (cache reuse, evaluation, pseudo-label files)."""
    root = tmp_path_factory.mktemp("debug_run")
    metrics = train(root)
    return DebugRun(root / "data", root / "cache", root / "run", metrics)


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core CPU run faster (and steadier) with one intra-op thread."""
    import torch  # here, not at the top: xdist's controller, which runs no test, needs no torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def wandb_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test talks to the W&B servers: ``WANDB_MODE=offline`` (also for subprocesses)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield


def user_env() -> dict[str, str]:
    """The environment of a user's shell: one torch thread, offline W&B, unbuffered wide output,
    no debug tracebacks."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "WANDB_MODE": "offline",
        "COLUMNS": "200",
    }
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("FUSTAL_DEBUG", None)
    return env


def run_fustal(
    module: str, *args: str, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``python -m fustal.<module> ARGS`` in a new interpreter, as a user runs it."""
    cmd = [sys.executable, "-m", f"fustal.{module}", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=user_env(), timeout=timeout, cwd=cwd
    )


FORKED_MODULES = [
    "fustal.train",
    "fustal.evaluate",
    "fustal.predict",
    "fustal.score",
    "fustal.pipeline.run",
]


def _forked_main(module: str, args: list[str], cwd: str | None, stdout: str, stderr: str) -> int:
    """Forked child: ``python -m fustal.<module> ARGS`` (the module run as ``__main__``) in the
    user's environment, output to the files ``stdout`` and ``stderr``; returns its exit code as
    an interpreter would (an uncaught exception: its traceback and 1)."""
    for sig, handler in SIGNAL_DEFAULTS.items():
        signal.signal(sig, handler)
    os.environ.clear()
    os.environ.update(user_env())
    import torch

    torch.set_num_threads(1)
    if cwd is not None:
        os.chdir(cwd)
    for fd, path in ((1, stdout), (2, stderr)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), errors="backslashreplace", line_buffering=True
    )
    sys.argv = [f"fustal.{module}", *args]
    sys.modules.pop(f"fustal.{module}", None)  # preloaded: run its code afresh as __main__
    code = 1
    try:
        runpy.run_module(f"fustal.{module}", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        # end as an interpreter ends: threading's exit hooks (they stop pools such as the
        # joblib launcher's idle workers), then multiprocessing's (the join of child processes)
        threading._shutdown()  # type: ignore[attr-defined]
        multiprocessing.util._exit_function()  # type: ignore[attr-defined]
        sys.stdout.flush()
        sys.stderr.flush()
    return code


# the signal dispositions of a new interpreter, which a forked command starts with
SIGNAL_DEFAULTS = {
    signal.SIGINT: signal.default_int_handler,
    signal.SIGTERM: signal.SIG_DFL,
    signal.SIGCHLD: signal.SIG_DFL,
    signal.SIGPIPE: signal.SIG_IGN,
}


def _serve(requests: Connection, replies: Connection) -> NoReturn:
    """The forkserver's loop: fork a child per command received (``(module, args, cwd, stdout,
    stderr)``), replying ``("started", pid)``, and reply ``("exited", pid, code)`` when a child
    ends (``-N``: killed by signal N); exit when the test process closes its end."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        faulthandler.disable()
        children: dict[int, int] = {}  # pidfd -> pid
        while True:
            for ready in wait([requests, *children]):
                if ready is requests:
                    try:
                        command = requests.recv()
                    except EOFError:
                        os._exit(0)
                    pid = os.fork()
                    if pid == 0:
                        os._exit(_forked_main(*command))
                    children[os.pidfd_open(pid)] = pid
                    replies.send(("started", pid))
                else:
                    pid = children.pop(ready)
                    os.close(ready)
                    status = os.waitpid(pid, 0)[1]
                    replies.send(("exited", pid, os.waitstatus_to_exitcode(status)))
    finally:
        os._exit(1)


@dataclass
class Command:
    """A command forked by a :class:`Forkserver`: its ``pid``, and ``exitcode`` once it ended
    (``-N``: killed by signal N), the methods of a ``multiprocessing.Process`` that tests use."""

    server: Forkserver
    pid: int
    exitcode: int | None = None

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is None:
            self.exitcode = self.server.exit_code(self.pid, timeout)

    def is_alive(self) -> bool:
        self.join(0)
        return self.exitcode is None

    def kill(self) -> None:
        if self.is_alive():
            os.kill(self.pid, signal.SIGKILL)


@dataclass
class Started:
    """A forked ``python -m fustal.<module> ARGS`` that is running: its ``process`` (``pid``,
    ``is_alive()``, ``kill()``), and :meth:`finish`."""

    process: Command
    args: list[str]
    scratch: tempfile.TemporaryDirectory

    def finish(self, timeout: float = 600) -> subprocess.CompletedProcess:
        """Wait for the process (killed after ``timeout`` seconds); its exit code (``-N``:
        killed by signal N) and output."""
        self.process.join(timeout=timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        out, err = (Path(self.scratch.name) / name for name in ("stdout.txt", "stderr.txt"))
        stdout, stderr = (f.read_text() if f.exists() else "" for f in (out, err))
        self.scratch.cleanup()
        return subprocess.CompletedProcess(self.args, self.process.exitcode, stdout, stderr)


class Forkserver:
    """Runs ``python -m fustal.<module> ARGS`` as a process forked from a server process that was
    itself forked from this test process before any test ran (so it holds no test's state) and
    has imported fustal's entry points: each run a process of its own, without the seconds a new
    interpreter spends importing torch and Lightning."""

    def __init__(self) -> None:
        # imported before the fork (most of them already by the collected tests): the server
        # inherits them instead of importing them a second time
        for name in FORKED_MODULES:
            importlib.import_module(name)
        requests, self.requests = Pipe(duplex=False)  # (receiving end, sending end)
        self.replies, replies = Pipe(duplex=False)
        self.pid = os.fork()
        if self.pid == 0:
            self.requests.close()
            self.replies.close()
            _serve(requests, replies)
        requests.close()
        replies.close()
        self.exited: dict[int, int] = {}

    def receive(self) -> int:
        """The next reply; an exit is recorded, a start returns its pid."""
        reply = self.replies.recv()
        if reply[0] == "exited":
            self.exited[reply[1]] = reply[2]
            return 0
        return reply[1]

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """Command ``pid``'s exit code, waiting up to ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while pid not in self.exited:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self.replies.poll(left):
                return None
            self.receive()
        return self.exited[pid]

    def start(self, module: str, *args: str, cwd: Path | None = None) -> Started:
        """Start the command and return at once."""
        scratch = tempfile.TemporaryDirectory()
        out, err = (str(Path(scratch.name) / name) for name in ("stdout.txt", "stderr.txt"))
        where = None if cwd is None else str(cwd)
        self.requests.send((module, list(args), where, out, err))
        pid = 0
        while not pid:
            pid = self.receive()
        return Started(Command(self, pid), [module, *args], scratch)

    def __call__(
        self, module: str, *args: str, cwd: Path | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        """Run the command to its end, as :func:`run_fustal` does."""
        return self.start(module, *args, cwd=cwd).finish(timeout)


FORKSERVER: list[Forkserver] = []  # this test process's, started by pytest_collection_finish


@pytest.fixture(scope="session")
def forked() -> Forkserver:
    """The session's :class:`Forkserver` (``tests/test_bad_inputs.py`` checks that its runs
    report what the real command reports)."""
    return FORKSERVER[0]


class NoHostSync:
    """Make the host-synchronising tensor operations raise inside a block (on a GPU each of
    them waits for the device)."""

    NAMES = ("item", "tolist", "numpy", "nonzero", "__bool__", "__int__", "__float__")

    def __enter__(self):
        import torch

        self.saved = {n: getattr(torch.Tensor, n) for n in self.NAMES}
        self.saved_nonzero = torch.nonzero

        def refuse(*args, **kwargs):
            raise AssertionError("host synchronisation in the training step")

        for name in self.NAMES:
            setattr(torch.Tensor, name, refuse)
        torch.nonzero = refuse
        return self

    def __exit__(self, *exc) -> None:
        import torch

        for name, fn in self.saved.items():
            setattr(torch.Tensor, name, fn)
        torch.nonzero = self.saved_nonzero
