"""What enters a stage's cache key, and what stays out: the one statement of the rule.

A stage's key (:meth:`fustal.pipeline.stage.Stage.key`) hashes three things:

- **config**: the stage's ``key_parts()``. A training stage's are :func:`stage_identity` (its
  ``module`` and ``<stage>.data`` without :data:`WORKER_KEYS`, the dataset with its synthetic
  parameters, the stage's feature view, the seed, the ``trainer`` settings without
  :data:`COSMETIC_TRAINER_KEYS`, and with held-out videos the split) plus its budget and
  :func:`selection_identity`; the filter's are its group. Outputs and pictures
  (``plot_videos``, loggers, callbacks) are out.
- **upstream**: the keys of the stages whose outputs it reads.
- **code**: the source of every fustal module the stage's run imports
  (:func:`fustal.pipeline.cache.code_fingerprint`, from the stage's module and the ``_target_``
  modules its key parts and the callbacks name), without :data:`COSMETIC_MODULES`; of a user's
  own files, those its key parts name (a user's callback observes a run, it changes no
  artifact).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from fustal.config import to_plain
from fustal.data.features import FRAME_KEYS, FeatureSpec
from fustal.training.selection import selection_metric

# settings of a stage's module and data that change nothing it computes: data-loading and
# proposal worker processes
WORKER_KEYS = frozenset({"num_workers", "proposal_workers"})
# Trainer arguments that change nothing a stage computes
COSMETIC_TRAINER_KEYS = frozenset(
    {
        "_target_",
        "enable_progress_bar",
        "enable_model_summary",
        "log_every_n_steps",
        "profiler",
        "num_sanity_val_steps",
        "limit_val_batches",
        "limit_test_batches",
        "limit_predict_batches",
    }
)
# fustal modules that cannot change what a stage computes: console output, progress, logging to
# experiment trackers, pictures (a package stands for all of its modules)
COSMETIC_MODULES = (
    "fustal.training.progress",
    "fustal.training.quiet",
    "fustal.training.loggers",
    "fustal.metrics.table",
    "fustal.pipeline.tracker_summary",
    "fustal.viz",
)


def features_identity(node: DictConfig, spec: FeatureSpec) -> dict[str, Any]:
    """A stage's feature view: its config node, with the timing and extractor that the view
    took from its sidecar (``features.json``) when it read one."""
    read = () if spec.sidecar is None else (*FRAME_KEYS, "extractor")
    return {**to_plain(node), **{key: getattr(spec, key) for key in read}}


def stage_identity(
    cfg: DictConfig, stage: str, module: DictConfig, features: FeatureSpec
) -> dict[str, Any]:
    """The config a training stage reads besides its budget and its choice of weights; its
    ``features`` view as loaded (:func:`features_identity`)."""

    def settings(node: DictConfig, drop: frozenset[str] = WORKER_KEYS) -> dict[str, Any]:
        return {k: v for k, v in to_plain(node).items() if k not in drop}

    identity = {
        "module": settings(module),
        "data": settings(cfg[stage].data),
        "dataset": to_plain(cfg.dataset),
        "features": features_identity(cfg.features[stage], features),
        "seed": cfg.seed,
        "trainer": settings(cfg.trainer, COSMETIC_TRAINER_KEYS),
    }
    if cfg.validation.mode != "test":  # validation=test keeps the keys it always had
        # the split only: heldout and video_labels train on the same videos and share the entry
        # (each run scores the held-out videos as its mode asks)
        identity["heldout"] = {"fraction": cfg.validation.fraction, "seed": cfg.validation.seed}
    return identity


def selection_identity(cfg: DictConfig, best: bool, patience: int | None = None) -> dict[str, Any]:
    """How a stage chooses its weights: nothing when it keeps its last ones (the key of
    ``validation=test`` stays what it was), else (``best``) the held-out metric it maximizes
    (the validation mode decides it) and the early-stopping ``patience``."""
    if not best:
        return {}
    return {"select": {"metric": selection_metric(cfg.validation.mode), "patience": patience}}
