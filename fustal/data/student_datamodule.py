"""Segment-level data for the stage-3 student: overlapping features with, per training video,
target segments in feature-grid units (pseudo labels, or ground truth with supervision=full),
and for evaluation each video's ground truth in seconds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fustal.data.annotations import Video
from fustal.data.datamodule import ResumableDataModule
from fustal.data.dataset import StageData
from fustal.data.features import seconds_to_grid
from fustal.data.sampling import item_rng, split_key
from fustal.errors import FustalError
from fustal.student.assign import pad_segments

# the training targets: :data:`fustal.metrics.results.VideoDetections` rows per video
# (class_index, score, start_s, end_s); a video without rows has no localization target
Targets = Mapping[str, np.ndarray]
# video-level class scores per video, ``[C]`` (e.g. the generator's; :mod:`fustal.fusion`)
VideoScores = Mapping[str, np.ndarray]


def video_rows(rows: Targets, video_id: str) -> np.ndarray:
    """``video_id``'s rows of ``rows`` as ``[K, 4]`` float64 (``[0, 4]`` when it has none)."""
    return np.asarray(rows.get(video_id, np.zeros((0, 4))), np.float64).reshape(-1, 4)


def random_crop(
    length: int,
    segments: np.ndarray,
    crop_len: int,
    rng: np.random.Generator,
    min_keep: float = 0.5,
    tries: int = 200,
) -> tuple[int, np.ndarray]:
    """Pick a window ``[start, start + crop_len)`` of a ``length``-step sequence.

    A segment (grid units, ``[M, 2]``) survives when at least ``min_keep`` of its length lies in
    the window. Up to ``tries`` windows are drawn (all at once); the first that keeps a segment
    wins, else the last draw. Returns the start and the kept mask ``[M]``.
    """
    starts = rng.integers(0, length - crop_len + 1, size=tries)
    if segments.shape[0] == 0:
        return int(starts[0]), np.zeros(0, dtype=bool)
    left = np.maximum(starts[:, None], segments[None, :, 0])
    right = np.minimum(starts[:, None] + crop_len, segments[None, :, 1])
    area = np.maximum(segments[:, 1] - segments[:, 0], 1e-8)
    keep = (np.clip(right - left, 0, None) / area) >= min_keep  # [tries, M]
    hits = np.flatnonzero(keep.any(axis=1))
    pick = int(hits[0]) if hits.size else tries - 1
    return int(starts[pick]), keep[pick]


@dataclass(eq=False, repr=False)  # a dataclass repr would list every video
class StudentVideos(Dataset):
    """One item per video: ``features [D, T]``, ``segments [M, 2]`` (grid units) and ``labels
    [M]`` of the targets, ``video_label [C]``, and timing for conversion back to seconds.

    Training applies METHOD.md's crop: a video of ``T <= max_seq_len`` steps is cropped to a
    length drawn from ``[0.9 T, T]``, a longer one to a window of exactly ``max_seq_len`` steps;
    segments with >= 50% of their length in the window are kept (clipped to it). Targets are
    not clamped at 0 before cropping. (The input noise is the model's first training step,
    :class:`fustal.student.model.TriDet`.)

    With ``video_scores`` every item also carries its video's ``class_scores [C]``, with
    ``video_detections`` its ``class_detections [P, 4]`` (what fusion fuses); with ``ignore``
    (rows in seconds per video, like ``targets``) its ``ignore_segments [K, 2]`` (grid units,
    cropped with the clip), the regions its classification loss leaves out.
    """

    data: StageData
    videos: Sequence[Video]
    targets: Targets | None
    train: bool
    max_seq_len: int
    crop_ratio: Sequence[float] = (0.9, 1.0)
    crop_tries: int = 200
    crop_min_keep: float = 0.5
    seed: int = 0
    video_scores: VideoScores | None = None
    # a classifier's detections per video, ``[P, 4]`` rows ``(class, score, start_s, end_s)``
    # (the generator's; fused at ``fusion.level=detections``)
    video_detections: Mapping[str, np.ndarray] | None = None
    # regions neither action nor background per video, rows like the targets' (training only)
    ignore: Targets | None = None

    def __post_init__(self) -> None:
        self.videos = list(self.videos)
        self.crop_ratio = tuple(self.crop_ratio)

    def __len__(self) -> int:
        return len(self.videos)

    def _targets(self, video: Video) -> tuple[np.ndarray, np.ndarray]:
        if self.targets is None:
            return video.segments, video.labels
        rows = video_rows(self.targets, video.id)
        return rows[:, 2:4], rows[:, 0].astype(np.int64)

    def __getitem__(self, key: int) -> dict:
        epoch, index = split_key(key, len(self.videos))
        video = self.videos[index]
        feats = self.data.features.load(video)
        length = feats.shape[0]
        timing = self.data.features.timing(video, length)
        segs_s, labels = self._targets(video)
        positive = segs_s[:, 1] > segs_s[:, 0]
        segs = seconds_to_grid(segs_s[positive], timing)
        labels = labels[positive]
        ignore = None
        if self.ignore is not None:
            ignore = seconds_to_grid(video_rows(self.ignore, video.id)[:, 2:4], timing)
        start = 0
        if self.train:
            rng = item_rng(self.seed, epoch, index)
            if length > self.max_seq_len:
                crop_len = self.max_seq_len
            else:
                lo = max(int(round(self.crop_ratio[0] * length)), 1)
                hi = min(int(round(self.crop_ratio[1] * length)), length)
                crop_len = int(rng.integers(lo, hi + 1))
            if crop_len < length:
                start, keep = random_crop(
                    length, segs, crop_len, rng, self.crop_min_keep, self.crop_tries
                )
                segs = np.clip(segs[keep], start, start + crop_len) - start
                labels = labels[keep]
                feats = feats[start : start + crop_len]
                if ignore is not None:
                    ignore = np.clip(ignore, start, start + crop_len) - start
        item = {
            "features": torch.from_numpy(np.ascontiguousarray(feats.T)),
            "segments": torch.from_numpy(segs.astype(np.float32)).reshape(-1, 2),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "video_label": torch.from_numpy(video.video_label(self.data.num_classes)),
            "video_id": video.id,
            "index": index,
            "offset": start,
            "stride_s": timing.stride_s,
            "window_s": timing.window_s,
            "duration": video.duration if video.duration is not None else float("inf"),
            "gt_segments": video.segments,
            "gt_labels": video.labels,
        }
        if ignore is not None:
            ignore = ignore[ignore[:, 1] > ignore[:, 0]]
            item["ignore_segments"] = torch.from_numpy(ignore.astype(np.float32)).reshape(-1, 2)
        if self.video_scores is not None:
            if video.id not in self.video_scores:
                raise FustalError(f"video {video.id}: no video-level class scores to fuse")
            item["class_scores"] = torch.as_tensor(self.video_scores[video.id], dtype=torch.float64)
        if self.video_detections is not None:
            if video.id not in self.video_detections:
                raise FustalError(f"video {video.id}: no detections of the generator to fuse")
            item["class_detections"] = self.video_detections[video.id]
        return item


def ignored_rows(unfiltered: Targets | None, score: float | None) -> dict[str, np.ndarray] | None:
    """The rows of ``unfiltered`` (per video ``[K, 4]``: class, score, start, end) scoring above
    ``score``; None when either is None."""
    if unfiltered is None or score is None:
        return None
    rows = {vid: video_rows(unfiltered, vid) for vid in unfiltered}
    return {vid: r[r[:, 1] > score] for vid, r in rows.items()}


def make_collate(pad_to: int | None, stride: int):
    """Collate that pads ``features`` to at least ``pad_to`` steps, rounded up to a multiple of
    ``stride``, builds the ``mask [B, T]`` and pads the targets (``segments [B, M, 2]``,
    ``labels [B, M]``, ``target_valid [B, M]``). Training and inference both pad to at least
    ``max_seq_len`` as the research code does: the SGP blocks' GroupNorm sees the padding, so
    padding less at test time than in training would shift the statistics."""

    def collate(items: list[dict]) -> dict:
        lengths = [item["features"].shape[1] for item in items]
        target = max(lengths) if pad_to is None else max(*lengths, pad_to)
        target = int(np.ceil(target / stride) * stride)
        feats = torch.zeros(len(items), items[0]["features"].shape[0], target)
        mask = torch.zeros(len(items), target, dtype=torch.bool)
        for i, item in enumerate(items):
            feats[i, :, : lengths[i]] = item["features"]
            mask[i, : lengths[i]] = True
        segments, labels, target_valid = pad_segments(
            [item["segments"] for item in items], [item["labels"] for item in items]
        )
        batch = {
            "features": feats,
            "mask": mask,
            "segments": segments,
            "labels": labels,
            "target_valid": target_valid,
            "video_labels": torch.stack([item["video_label"] for item in items]),
            "video_id": [item["video_id"] for item in items],
            "index": torch.tensor([item["index"] for item in items]),
            "offset": torch.tensor([item["offset"] for item in items]),
            "stride_s": torch.tensor([item["stride_s"] for item in items], dtype=torch.float64),
            "window_s": torch.tensor([item["window_s"] for item in items], dtype=torch.float64),
            "duration": torch.tensor([item["duration"] for item in items], dtype=torch.float64),
            "gt_segments": [item["gt_segments"] for item in items],
            "gt_labels": [item["gt_labels"] for item in items],
        }
        if "ignore_segments" in items[0]:
            spans = [item["ignore_segments"] for item in items]
            none = [torch.zeros(len(span), dtype=torch.long) for span in spans]
            batch["ignore_segments"], _, batch["ignore_valid"] = pad_segments(spans, none)
        if "class_scores" in items[0]:
            batch["class_scores"] = torch.stack([item["class_scores"] for item in items])
        if "class_detections" in items[0]:
            batch["class_detections"] = [item["class_detections"] for item in items]
        return batch

    return collate


class PseudoLabelDataModule(ResumableDataModule):
    """Student data: training videos with ``targets`` (:data:`Targets`, pseudo labels in
    seconds; ``None`` means ground truth, i.e. supervision=full) and the test videos for
    validation and testing; :meth:`loader` serves either subset for prediction. ``max_seq_len``
    and ``max_stride`` come from the network (clips are cropped to and padded to at least
    ``max_seq_len``, rounded up to a multiple of ``max_stride``). ``video_scores`` (video-level
    class scores of the evaluated videos) and ``video_detections`` (the generator's detections
    of them, in seconds) go into the evaluation batches as ``class_scores`` and
    ``class_detections`` for fusion. With ``ignore_score``, the ``unfiltered`` pseudo labels
    (what the filter received) scoring above it mark regions that the training loss leaves out
    of the classification, where no kept target lies (a filter that removes a true action would
    otherwise teach it as background); None: every step outside the targets is background."""

    batch_size_key = "student.data.batch_size"

    def __init__(
        self,
        data: StageData,
        max_seq_len: int,
        max_stride: int,
        targets: Targets | None = None,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        augment: Mapping | None = None,
        seed: int = 0,
        video_scores: VideoScores | None = None,
        video_detections: Mapping[str, np.ndarray] | None = None,
        ignore_score: float | None = None,
        unfiltered: Targets | None = None,
    ) -> None:
        super().__init__(data, batch_size, eval_batch_size, num_workers, seed)
        self.targets = targets
        self.ignore = ignored_rows(unfiltered, ignore_score)
        self.video_scores = video_scores
        self.video_detections = video_detections
        self.max_seq_len = max_seq_len
        self.max_stride = max_stride
        self.augment = dict(augment or {})

    def dataset(self, videos: Sequence[Video], train: bool = False) -> StudentVideos:
        """``videos`` as student items: training crops and targets (``train=True``), else whole
        videos with what fusion fuses."""
        return StudentVideos(
            self.data,
            videos,
            self.targets if train else None,
            train,
            self.max_seq_len,
            **self.augment,
            seed=self.seed,
            video_scores=None if train else self.video_scores,
            video_detections=None if train else self.video_detections,
            ignore=self.ignore if train else None,
        )

    def loader(self, subset: str, train: bool = False) -> DataLoader:
        """A loader over the ``train``, ``val`` (held out) or ``test`` videos (``train=True``:
        training crops and targets; else whole videos)."""
        dataset = self.dataset(self.videos[subset], train)
        collate = make_collate(self.max_seq_len, self.max_stride)
        return self.make_loader(dataset, subset, train, collate)
