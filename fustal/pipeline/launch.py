"""Multi-process (DDP) runs of the pipeline: every rank runs every stage.

Lightning's DDP launcher starts ranks 1..N-1 at the first ``Trainer.fit``, with a command built
from ``sys.argv``: under ``-m`` (Hydra multirun) that command replays the whole sweep, into the
unused ``hydra.run.dir``. fustal starts them itself when the stages start
(:func:`distributed_run`), as ``torchrun`` would: ``python -m fustal.train`` with the job's own
overrides and the ``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_*`` environment, in the job's output dir
(no ``.hydra/``, logging to ``<job name>_rank<r>.log``, stdout discarded since it only repeats
rank 0's). Every process then joins the process group (``torch.distributed``); the stage Trainers
find it and the externally set ranks, and launch nothing. Processes started by ``torchrun`` or a
cluster (SLURM) are recognised by Lightning's cluster environment and join the same way. On
leaving, rank 0 waits for the other ranks, the process group is destroyed and the environment
restored, so that the next job of a multirun starts afresh. Only public Lightning and torch APIs
are used.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from pytorch_lightning.strategies import DDPStrategy

from fustal.config import to_plain
from fustal.errors import FustalError

# Hydra overrides that choose how and where a job runs: replaced in a worker's command.
LAUNCH_OVERRIDES = (
    "hydra.mode",
    "hydra.run.",
    "hydra.sweep.",
    "hydra.output_subdir",
    "hydra.job.name",
    "hydra/launcher",
    "hydra.launcher.",
    "hydra/sweeper",
    "hydra.sweeper.",
)
# Seconds a failed worker is given to take rank 0 down through a failed collective before the
# watchdog stops the run (NCCL collectives do not notice a dead peer).
WATCHDOG_GRACE_S = 30.0


def multiprocess_strategy(cfg: DictConfig) -> DDPStrategy | None:
    """The DDP strategy of ``cfg.trainer`` when it runs more than one process; None for a
    single process."""
    options = {k: v for k, v in to_plain(cfg.trainer).items() if k != "_target_"}
    if options.get("num_nodes", 1) == 1 and options.get("devices", 1) in (1, "1"):
        return None
    trainer = pl.Trainer(**options, logger=False, enable_checkpointing=False)
    if trainer.world_size <= 1:
        return None
    strategy = trainer.strategy
    name = str(options.get("strategy", ""))
    if not isinstance(strategy, DDPStrategy) or any(
        word in name for word in ("spawn", "fork", "notebook")
    ):
        raise FustalError(
            f"trainer.strategy={name}: fustal runs every stage in each process and needs"
            " script-launched DDP (trainer=ddp or trainer=ddp_cpu)"
        )
    return strategy


def join_process_group(strategy: DDPStrategy) -> None:
    """Join the process group as this process's rank (``torch.distributed``, with gloo next to
    NCCL on GPUs: the evaluation and the cache decisions gather Python objects on the CPU)."""
    strategy.set_world_ranks()
    device = strategy.root_device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = strategy.process_group_backend or (
        "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    )
    env = strategy.cluster_environment
    assert env is not None
    os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port))
    dist.init_process_group(backend, rank=strategy.global_rank, world_size=strategy.world_size)


def worker_command(local_rank: int) -> tuple[list[str], str, Path]:
    """The command, working dir and log file of the worker with ``local_rank``: this Hydra
    job's overrides, run (not swept) in this job's output dir."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise FustalError("trainer: multi-process runs start from `python -m fustal.train`")
    hydra_cfg = HydraConfig.get()
    config_dirs = [
        f"--config-dir={source.path}"
        for source in hydra_cfg.runtime.config_sources
        if source.provider == "command-line"
    ]
    hydra_overrides = [
        o for o in hydra_cfg.overrides.hydra if not o.lstrip("+~").startswith(LAUNCH_OVERRIDES)
    ]
    name = f"{hydra_cfg.job.name}_rank{local_rank}"
    output_dir = hydra_cfg.runtime.output_dir
    command = [
        sys.executable,
        "-m",
        "fustal.train",
        f"--config-name={hydra_cfg.job.config_name}",
        *config_dirs,
        *hydra_cfg.overrides.task,
        *hydra_overrides,
        f'hydra.run.dir="{output_dir}"',
        # a job of a search (hparams_search: hydra.mode=MULTIRUN in its config) runs as one run
        "hydra.mode=RUN",
        "hydra.output_subdir=null",
        f"hydra.job.name={name}",
    ]
    return command, hydra_cfg.runtime.cwd, Path(output_dir) / f"{name}.log"


class Workers:
    """The worker processes (local ranks 1..N-1) this process started, and a watchdog thread
    that stops the run when one fails while rank 0 is blocked."""

    def __init__(self, strategy: DDPStrategy) -> None:
        env = strategy.cluster_environment
        assert env is not None
        os.environ.update(
            MASTER_ADDR=env.main_address,
            MASTER_PORT=str(env.main_port),
            NODE_RANK=str(env.node_rank()),
            LOCAL_RANK="0",
            WORLD_SIZE=str(strategy.num_processes * strategy.num_nodes),
        )
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        for local_rank in range(1, strategy.num_processes):
            command, cwd, log_file = worker_command(local_rank)
            self.procs.append(
                subprocess.Popen(
                    command,
                    cwd=cwd,
                    env={**os.environ, "LOCAL_RANK": str(local_rank)},
                    stdout=subprocess.DEVNULL,
                )
            )
            self.logs.append(log_file)
        self.done = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="fustal-ddp-watchdog").start()

    def failed(self) -> list[str]:
        """``rank R exited with code C (log: FILE)`` for every worker that exited with an error."""
        workers = enumerate(zip(self.procs, self.logs, strict=True), start=1)
        return [
            f"DDP rank {rank} exited with code {proc.returncode} (log: {log_file})"
            for rank, (proc, log_file) in workers
            if proc.poll() not in (None, 0)
        ]

    def _watch(self) -> None:
        while not self.done.wait(5.0):
            failures = self.failed()
            if failures and not self.done.wait(WATCHDOG_GRACE_S):
                print(f"error: {failures[0]}; stopping", file=sys.stderr, flush=True)
                self.kill()
                os._exit(1)

    def join(self) -> None:
        """Wait for every worker to finish; raise if one failed."""
        for proc in self.procs:
            proc.wait()
        self.done.set()
        failures = self.failed()
        if failures:
            raise FustalError(failures[0])

    def stop(self, grace_s: float = 3.0) -> list[str]:
        """After an error on rank 0: give the workers ``grace_s`` seconds to exit on their own
        (a worker that failed first has), kill the others; return the failures of the former."""
        self.done.set()
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        failures = self.failed()
        self.kill()
        return failures

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@contextmanager
def distributed_run(cfg: DictConfig) -> Iterator[None]:
    """Run the body on every process of ``cfg.trainer`` with the process group up (a plain
    ``yield`` for a single process). Rank 0 starts the other local ranks unless the cluster
    environment has started them (``LOCAL_RANK`` set)."""
    strategy = multiprocess_strategy(cfg)
    if strategy is None:
        yield
        return
    saved_env = dict(os.environ)
    workers: Workers | None = None
    try:
        assert strategy.cluster_environment is not None
        if not strategy.cluster_environment.creates_processes_externally:
            workers = Workers(strategy)
        join_process_group(strategy)
        yield
        if workers is not None:
            workers.join()
    except BaseException as err:
        failures = workers.stop() if workers is not None else []
        if failures and not isinstance(err, FustalError):
            raise FustalError(failures[0]) from err
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved_env)
