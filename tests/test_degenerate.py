"""Degenerate but valid data must not crash, with the real components (stage views, the
DataModules and collate, StudentModule training through a Lightning Trainer, the generator,
decoding, results files and mAP): videos shorter than the student's downsampling factor (and a
one-step video in the generator), a test video longer than ``max_seq_len`` at inference, test
videos without detections, training videos without pseudo labels. (A dataset whose pseudo
labels the filter removes entirely is a clear error: ``pseudo_labels_all_filtered`` in
``tests/test_bad_inputs.py``.)"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from fustal.data.dataset import StageData, load_stage_data
from fustal.data.generator_datamodule import GeneratorDataModule
from fustal.data.spec import DatasetConfig
from fustal.data.student_datamodule import PseudoLabelDataModule, Targets
from fustal.generator.module import GeneratorModule
from fustal.inference import predict_videos
from fustal.metrics.results import rows_to_results, score_rows
from fustal.student.module import StudentModule
from tests.conftest import CONF_DIR
from tests.test_data import features_cfg

ARCH = (2, 2, 5)
MAX_STRIDE = 2 ** ARCH[2]  # 32: the student's downsampling factor
SHORT = 3  # steps
MAX_SEQ_LEN = 64  # below every synthetic test video (150+ steps)
MODEL = {
    "embd_dim": 16,
    "fpn_dim": 16,
    "head_dim": 16,
    "sgp_mlp_dim": 32,
    "arch": ARCH,
    "max_seq_len": MAX_SEQ_LEN,
}
TIOU = [0.1, 0.3, 0.5, 0.7]
MAP_KEYS = [f"mAP@{t}" for t in TIOU] + ["avg"]


@pytest.fixture(scope="module")
def root(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small synthetic dataset with one training and one test video cut to ``SHORT`` steps
    (student layout) and to one step (generator layout)."""
    root = Path(shutil.copytree(synthetic_root, tmp_path_factory.mktemp("degenerate") / "data"))
    for subset, split in (("validation", "train"), ("test", "test")):
        vid = short_video(subset)
        cut = [(root / "i3d_features" / f"{vid}.npy", SHORT)]
        cut += [(root / "features" / split / s / f"{vid}.npy", 1) for s in ("rgb", "flow")]
        for path, steps in cut:
            np.save(path, np.load(path)[:steps])
    return root


@pytest.fixture(scope="module")
def data(root: Path) -> StageData:
    """The student view of :func:`root`."""
    return load_stage_data(DatasetConfig(str(root)), features_cfg("i3d_overlap"))


def short_video(subset: str) -> str:
    return f"video_{subset}_0000003"


def gt_targets(data: StageData) -> dict[str, np.ndarray]:
    """Ground truth of the training videos as student targets (rows, seconds)."""
    return {
        v.id: np.column_stack([v.labels, np.ones(len(v.labels)), v.segments])
        for v in data.train_videos()
    }


def make_datamodule(data: StageData, targets: Targets | None) -> PseudoLabelDataModule:
    return PseudoLabelDataModule(
        data, MAX_SEQ_LEN, MAX_STRIDE, targets=targets, batch_size=4, eval_batch_size=2, seed=0
    )


def make_module(data: StageData, **kwargs) -> StudentModule:
    torch.manual_seed(0)
    defaults = {
        "net": MODEL,
        "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
        "max_epochs": 2,
        "epochs_pseudo": 1,
        "ema_decay": 0.9,
        "tiou_thresholds": TIOU,
    }
    return StudentModule(16, data.num_classes, **{**defaults, **kwargs})


def predict(module: pl.LightningModule, loader) -> dict[str, dict[str, np.ndarray]]:
    """Detections per variant through a real ``Trainer.predict``."""
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    return predict_videos(trainer, module, loader)


def fit(module: StudentModule, dm: PseudoLabelDataModule, tmp_path: Path) -> list[float]:
    """Train with a real Trainer (one pseudo-label epoch, one distillation epoch); the losses."""
    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(
        max_epochs=module.hparams.max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        callbacks=[Record()],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    return losses


def check_metrics(metrics: dict[str, float]) -> None:
    assert list(metrics) == MAP_KEYS
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_video_shorter_than_the_downsampling_factor(data: StageData, tmp_path: Path) -> None:
    dm = make_datamodule(data, gt_targets(data))
    dataset = dm.train_dataloader().dataset
    index = [v.id for v in dm.videos["train"]].index(short_video("validation"))
    item = dataset[index]
    assert item["features"].shape == (16, SHORT)  # no crop below the video's own length
    batch = dm.train_dataloader().collate_fn([item])
    assert batch["features"].shape[2] == MAX_SEQ_LEN and int(batch["mask"].sum()) == SHORT

    module = make_module(data)
    loss = module.training_step(batch, 0)
    assert math.isfinite(float(loss))
    loss.backward()

    losses = fit(module, dm, tmp_path)  # the short video is in one batch of every epoch
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    dets = predict(module, dm.loader("test"))["student_ema"]
    assert set(dets) == {v.id for v in data.test_videos()}
    short = dets[short_video("test")]
    assert short.ndim == 2 and short.shape[1] == 4
    assert (short[:, 3] >= short[:, 2]).all() and (short[:, 2] >= 0).all()
    check_metrics(score_rows(dets, data.test_videos(), data.num_classes, TIOU))


def test_one_step_video_in_the_generator(root: Path) -> None:
    data = load_stage_data(DatasetConfig(str(root)), features_cfg("i3d_nonoverlap"))
    dm = GeneratorDataModule(data, num_segments=32, batch_size=4, seed=0)
    torch.manual_seed(0)
    proposals = OmegaConf.load(CONF_DIR / "generator" / "cola_cv.yaml").module.proposals
    module = GeneratorModule(
        16, data.num_classes, net={"hidden_dim": 32}, proposals=OmegaConf.to_container(proposals)
    )
    for batch in dm.train_dataloader():  # the one-step video is resampled to 32 steps
        assert math.isfinite(float(module.training_step(batch, 0)))
    module.eval()
    for subset in ("train", "test"):
        props = predict(module, dm.loader(subset))["generator"]
        assert set(props) == {v.id for v in data.videos(getattr(data, f"{subset}_subset"))}
        assert props[short_video("validation" if subset == "train" else "test")].shape[1] == 4


def test_test_video_longer_than_max_seq_len_is_seen_whole(data: StageData) -> None:
    dm = make_datamodule(data, None)
    module = make_module(data).eval()
    long_ids = []
    for batch in dm.loader("test"):
        lengths = batch["mask"].sum(1)
        assert batch["features"].shape[2] == math.ceil(int(lengths.max()) / MAX_STRIDE) * MAX_STRIDE
        for det, length, vid in zip(
            module.predict_batch(batch), lengths.tolist(), batch["video_id"], strict=True
        ):
            if length > MAX_SEQ_LEN:
                long_ids.append(vid)
                # detections come from the whole video, past the training window
                assert det[:, 3].max() > MAX_SEQ_LEN
    assert len(long_ids) == len(data.test_videos()) - 1


def test_test_videos_without_detections(data: StageData) -> None:
    dm = make_datamodule(data, None)
    # no class probability exceeds 1: nothing survives the candidate threshold
    module = make_module(data, inference={"pre_nms_thresh": 1.0})
    dets = predict(module, dm.loader("test"))["student"]
    assert {vid: d.shape for vid, d in dets.items()} == {v.id: (0, 4) for v in data.test_videos()}
    results = rows_to_results(dets, data.classes)
    assert all(entries == [] for entries in results["results"].values())
    metrics = score_rows(dets, data.test_videos(), data.num_classes, TIOU)
    check_metrics(metrics)
    assert all(v == 0.0 for v in metrics.values())

    # one video with perfect detections, the others with none
    hit = data.test_videos()[0]
    dets[hit.id] = np.column_stack([hit.labels, np.ones(len(hit.labels)), hit.segments])
    metrics = score_rows(dets, data.test_videos(), data.num_classes, TIOU)
    check_metrics(metrics)
    assert metrics["avg"] > 0.0


def test_training_videos_without_pseudo_labels(data: StageData, tmp_path: Path) -> None:
    videos = data.train_videos()
    targets = gt_targets(data)
    targets[videos[0].id] = np.zeros((0, 4))  # all filtered away
    del targets[videos[1].id]  # absent from the pseudo-label file
    dm = make_datamodule(data, targets)
    module = make_module(data)
    batches = list(dm.train_dataloader())
    empty = [
        (batch, row)
        for batch in batches
        for row, vid in enumerate(batch["video_id"])
        if vid in (videos[0].id, videos[1].id)
    ]
    assert len(empty) == 2
    for batch, row in empty:
        assert not batch["target_valid"][row].any()

    # a batch in which no video has a target: only negatives, finite losses and gradients
    nothing = {v.id: np.zeros((0, 4)) for v in videos}
    batch = next(iter(make_datamodule(data, nothing).train_dataloader()))
    loss = module.training_step(batch, 0)
    loss.backward()
    grads = [p.grad for p in module.model.parameters() if p.grad is not None]
    assert math.isfinite(float(loss)) and grads
    assert all(torch.isfinite(g).all() for g in grads)

    losses = fit(make_module(data), dm, tmp_path)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
