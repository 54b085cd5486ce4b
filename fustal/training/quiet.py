"""Keep the console and the run's log for fustal's own messages: library notices that repeat at
every Trainer, or that a fustal run cannot act on, are filtered."""

from __future__ import annotations

import logging
import warnings

# (message regex, category) of warnings raised inside Lightning that say nothing to a user
IGNORED_WARNINGS = (
    # Lightning's pytree helper on recent torch versions, raised at every fit
    (r".*isinstance\(treespec, LeafSpec\)", FutureWarning),
    # small datasets: fewer batches per epoch than log_every_n_steps
    (r"The number of training batches .* is smaller than the logging interval", UserWarning),
    # a resumed stage writes its checkpoint into the folder it resumes from
    (r"Checkpoint directory .* exists and is not empty", UserWarning),
    # fustal's DataModules shard by rank themselves and pass their own samplers
    (r".*does not have many workers which may be a bottleneck", UserWarning),
)
# Lightning's info lines, repeated by every stage's Trainer (the run's header says the device)
LIGHTNING_NOTICES = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "💡 Tip:",
    "LOCAL_RANK:",
    "Loading `train_dataloader` to estimate number of stepping batches",
)
LIGHTNING_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
)


def drop_notices(record: logging.LogRecord) -> bool:
    """A logging filter: drops the records whose message contains one of
    :data:`LIGHTNING_NOTICES`."""
    message = record.getMessage()
    return not any(notice in message for notice in LIGHTNING_NOTICES)


def quiet_libraries() -> None:
    """Filter the repeated library notices (:data:`IGNORED_WARNINGS`, :data:`LIGHTNING_NOTICES`).
    Safe to call more than once."""
    for message, category in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).addFilter(drop_notices)  # added once: addFilter skips a repeat
