"""Structured-config schema of ``conf/train.yaml``: one dataclass per config group.
:func:`fustal.config.checks.check_config` validates a composed config against it, so that an
unknown key (a typo, or ``+key=value`` that nothing reads) or a value of the wrong type is a
one-line error before anything runs.

Defaults here are METHOD.md's; the data nodes (``dataset``, ``features``) are the data layer's
own classes (:mod:`fustal.data.spec`). The YAML group files set every value explicitly (they are
what users read and edit). Groups whose members are open-ended (``trainer``: any Lightning Trainer
argument, checked against its signature; ``logger`` and ``callbacks``: ``_target_`` entries;
optimizers, which may be any ``torch.optim`` class) are typed as mappings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from fustal.data.spec import DatasetConfig, ViewConfig

# <stage>.select: best (the best held-out evaluation), last, or auto (best when there are held-out
# videos, validation=heldout|video_labels; last under validation=test): fustal.training.selection
SELECT_CHOICES = ("auto", "best", "last")


def _list(*values: Any) -> Any:
    return field(default_factory=lambda: list(values))


# ---------------------------------------------------------------- data


@dataclass
class SyntheticSchema:
    """The ``dataset.synthetic`` keys a config may set and their types; their defaults are
    :class:`fustal.data.synthetic.SyntheticConfig`'s."""

    num_classes: int = MISSING
    train_videos: int = MISSING
    test_videos: int = MISSING
    min_duration: float = MISSING
    max_duration: float = MISSING
    feature_dim: int = MISSING
    seed: int = MISSING
    annotation_file: str | None = MISSING
    # thumos or activitynet; the rest only the activitynet layout reads
    layout: str = MISSING
    resized_steps: int = MISSING
    second_action_prob: float = MISSING
    action_coverage_median: float = MISSING
    action_coverage_sigma: float = MISSING


@dataclass
class DatasetSchema(DatasetConfig):
    """The data layer's ``dataset`` node, its synthetic parameters checked."""

    synthetic: SyntheticSchema | None = None


@dataclass
class FeatureViewsSchema:
    generator: ViewConfig = field(default_factory=ViewConfig)
    student: ViewConfig = field(default_factory=ViewConfig)


# ---------------------------------------------------------------- stage 1


@dataclass
class GeneratorNetSchema:
    _target_: str = "fustal.generator.GeneratorNet"
    hidden_dim: int = 2048
    dropout: float = 0.7


@dataclass
class ProposalsSchema:
    class_thresh: float = 0.2
    cas_thresholds: Any = field(default_factory=lambda: {"start": 0.0, "stop": 0.25, "step": 0.025})
    actionness_thresholds: Any = field(
        default_factory=lambda: {"start": 0.1, "stop": 0.925, "step": 0.025}
    )
    upscale: int = 24
    nms_thresh: float = 0.5
    oic_lambda: float = 0.25
    oic_gamma: float = 0.2


@dataclass
class GeneratorModuleSchema:
    """fustal's own generator (a user's: :func:`fustal.config.checks.check_plug_ins`)."""

    _target_: str = "fustal.generator.GeneratorModule"
    net: GeneratorNetSchema = field(default_factory=GeneratorNetSchema)
    r_easy: int = 5
    r_hard: int = 20
    m: int = 3
    M: int = 6
    mining_dropout: float = 0.6
    temperature: float = 0.07
    contrast_weight: float = 0.01
    cross_video: bool = True
    cross_video_weight: float = 0.2
    optimizer: dict[str, Any] = field(default_factory=dict)
    weight_decay_classes: int | None = None
    proposals: ProposalsSchema = field(default_factory=ProposalsSchema)
    proposal_workers: Any = "auto"


@dataclass
class GeneratorDataSchema:
    _target_: str = "fustal.data.generator_datamodule.GeneratorDataModule"
    num_segments: int = 750
    batch_size: int = 16
    eval_batch_size: int = 16


@dataclass
class GeneratorSchema:
    max_steps: int = 6000
    val_every: int = 100
    select: str = "auto"
    patience: int | None = None
    module: GeneratorModuleSchema = field(default_factory=GeneratorModuleSchema)
    data: GeneratorDataSchema = field(default_factory=GeneratorDataSchema)


# ---------------------------------------------------------------- stage 2


@dataclass
class FilterSchema:
    """fustal's own filter (a user's: :func:`fustal.config.checks.check_plug_ins`)."""

    _target_: str = "fustal.pseudo.filters.prior_filter"
    # a number, null (off), or a list of them: chosen on the held-out videos (FilterStage.choose)
    min_density: Any = 0.2
    min_score: Any = 0.4
    keep_best: int = 0


# ---------------------------------------------------------------- stage 3


@dataclass
class TriDetSchema:
    _target_: str = "fustal.student.TriDet"
    embd_dim: int = 512
    fpn_dim: int = 512
    head_dim: int = 512
    arch: list[int] = _list(2, 2, 5)
    embd_kernel: int = 3
    sgp_mlp_dim: int = 768
    sgp_kernel: int = 1
    k: float = 5
    scale_factor: int = 2
    downsample_kernel: int = 3
    num_bins: int = 16
    head_num_layers: int = 3
    head_kernel: int = 3
    max_seq_len: int = 2304
    drop_path: float = 0.1
    layer_scale_init: float = 1e-4
    init_conv_vars: float = 0.0
    group_norm_groups: int = 16
    prior_prob: float = 0.01
    regression_ranges: list[Any] = _list([0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000])
    center_sample_radius: float = 1.5
    video_dropout: float = 0.7
    input_noise: float = 0.0005


@dataclass
class SchedulerSchema:
    _target_: str = "fustal.student.schedule.warmup_schedule"
    _partial_: bool = True
    warmup_epochs: float = 1.0
    schedule: str = "constant"


@dataclass
class InferenceSchema:
    """TriDet's decoding settings (``student.module.inference``): candidates above
    ``pre_nms_thresh``, the ``pre_nms_topk`` best per level, longer than ``min_duration``;
    soft-NMS with ``nms_sigma``, dropping scores below ``min_score``, at most ``max_seg_num`` per
    class; boundary voting at ``voting_thresh`` (0: off). The one statement of their defaults:
    the decoding functions take theirs from it (``fustal.student.decode.DECODING``)."""

    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000
    min_duration: float = 0.05
    nms_sigma: float = 0.5
    min_score: float = 0.001
    max_seg_num: int = 2000
    voting_thresh: float = 0.0


@dataclass
class StudentModuleSchema:
    _target_: str = "fustal.student.StudentModule"
    net: TriDetSchema = field(default_factory=TriDetSchema)
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: SchedulerSchema = field(default_factory=SchedulerSchema)
    video_loss_weight: float = 1.0
    video_topk_divisor: int = 5
    init_loss_norm: float = 100.0
    loss_norm_momentum: float = 0.9
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    iou_weight_power: float = 0.2
    label_smoothing: float = 0.0
    class_agnostic: bool = False
    inference: InferenceSchema = field(default_factory=InferenceSchema)


@dataclass
class AugmentSchema:
    crop_ratio: list[float] = _list(0.9, 1.0)
    crop_tries: int = 200
    crop_min_keep: float = 0.5


@dataclass
class StudentDataSchema:
    _target_: str = "fustal.data.student_datamodule.PseudoLabelDataModule"
    batch_size: int = 8
    eval_batch_size: int = 1
    augment: AugmentSchema = field(default_factory=AugmentSchema)
    ignore_score: float | None = None


@dataclass
class StudentSchema:
    epochs_pseudo: int = 61
    epochs_distill: int = 40
    full_epochs: int = 40
    full_schedule: str = "cosine"
    gradient_clip_val: float | None = 1.0
    val_every: int = 10
    select: str = "auto"
    distill_from: str = "last"
    module: StudentModuleSchema = field(default_factory=StudentModuleSchema)
    data: StudentDataSchema = field(default_factory=StudentDataSchema)


@dataclass
class EmaSchema:
    enabled: bool = True
    decay: float = 0.999
    warmup: bool = False
    score_thresh: float = 0.4


@dataclass
class FusionSchema:
    source: str | None = None
    score_file: str | None = None
    topk: int = 2
    rule: str = "sqrt"
    level: str = "video"
    vote_tiou: float = 0.6
    class_weight: float = 0.5


@dataclass
class ValidationSchema:
    # test | heldout | video_labels (conf/validation/*.yaml)
    mode: str = "test"
    fraction: float = 0.1
    seed: int = 0


# ---------------------------------------------------------------- run


@dataclass
class PathsSchema:
    root_dir: str = "."
    data_dir: str = "data"
    annotations_dir: str = "data/annotations"
    log_dir: str = "outputs"
    cache_dir: str = "outputs/cache"
    output_dir: str = "outputs"


@dataclass
class TrainSchema:
    stage: str = "all"
    seed: int = 0
    supervision: str = "weak"
    pseudo_labels: str | None = None
    cache: Any = True
    num_workers: int = 0
    plot_videos: int = 3
    dataset: DatasetSchema = field(default_factory=DatasetSchema)
    features: FeatureViewsSchema = field(default_factory=FeatureViewsSchema)
    generator: GeneratorSchema = field(default_factory=GeneratorSchema)
    filter: FilterSchema = field(default_factory=FilterSchema)
    student: StudentSchema = field(default_factory=StudentSchema)
    ema: EmaSchema = field(default_factory=EmaSchema)
    fusion: FusionSchema = field(default_factory=FusionSchema)
    validation: ValidationSchema = field(default_factory=ValidationSchema)
    # the metrics.json key path fustal.train's main returns (the Optuna sweeper optimizes it);
    # null: the final model's validation metric (fustal.pipeline.objective.metric_path)
    optimized_metric: str | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)
    paths: PathsSchema = field(default_factory=PathsSchema)
