"""StudentModule: real Lightning training, targets before/after distillation, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fustal.errors import FustalError
from fustal.student.assign import pad_segments
from fustal.student.module import StudentModule, weight_decay_groups
from fustal.student.schedule import lr_factor, warmup_schedule
from tests.conftest import NoHostSync
from tests.test_student_core import pad_features

FEATURE_DIM, NUM_CLASSES, MAX_LEN = 16, 3, 64
MODEL = {
    "embd_dim": 32,
    "fpn_dim": 32,
    "head_dim": 32,
    "arch": (2, 2, 3),
    "sgp_mlp_dim": 48,
    "regression_ranges": [[0, 4], [4, 8], [8, 16], [16, 10000]],
    "max_seq_len": MAX_LEN,
}


def make_videos(num: int, seed: int = 0) -> list[dict]:
    """Synthetic videos whose class-c actions light up feature channel c."""
    gen = torch.Generator().manual_seed(seed)
    videos = []
    for i in range(num):
        length = int(torch.randint(40, MAX_LEN + 1, (1,), generator=gen))
        feats = 0.1 * torch.randn(FEATURE_DIM, length, generator=gen)
        label = i % NUM_CLASSES
        start = int(torch.randint(0, length - 20, (1,), generator=gen))
        end = start + int(torch.randint(6, 20, (1,), generator=gen))
        feats[label, start:end] += 2.0
        videos.append(
            {
                "features": feats,
                "segments": torch.tensor([[float(start), float(end)]]),
                "labels": torch.tensor([label]),
                "video_id": f"v{i}",
            }
        )
    return videos


def collate(videos: list[dict]) -> dict:
    features, mask = pad_features([v["features"] for v in videos], MAX_LEN, 8)
    video_labels = torch.zeros(len(videos), NUM_CLASSES)
    for row, v in zip(video_labels, videos, strict=True):
        row[v["labels"]] = 1.0
    segments, labels, valid = pad_segments(
        [v["segments"] for v in videos], [v["labels"] for v in videos]
    )
    return {
        "features": features,
        "mask": mask,
        "segments": segments,
        "labels": labels,
        "target_valid": valid,
        "video_labels": video_labels,
        "video_id": [v["video_id"] for v in videos],
    }


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models on a shared CPU run far faster without intra-op threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_module(
    model: dict = MODEL, lr: float = 5e-3, warmup_epochs: float = 0.5, **kwargs
) -> StudentModule:
    torch.manual_seed(0)
    return StudentModule(
        FEATURE_DIM,
        NUM_CLASSES,
        net=model,
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": lr},
        scheduler={"warmup_epochs": warmup_epochs},
        **{"max_epochs": 10, **kwargs},
    )


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def fit(module: StudentModule, epochs: int, tmp_path: Path) -> tuple[pl.Trainer, LossRecorder]:
    recorder = LossRecorder()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        callbacks=[recorder],
        default_root_dir=tmp_path,
    )
    loader = DataLoader(make_videos(8), batch_size=4, shuffle=True, collate_fn=collate)
    trainer.fit(module, loader)
    return trainer, recorder


def test_fit_loss_drops_and_ema_and_normalizer_survive_checkpoint(tmp_path: Path) -> None:
    # the normalizer starts near this data's positives per batch, so losses are comparable
    module = make_module(epochs_pseudo=100, init_loss_norm=16.0)
    trainer, recorder = fit(module, 10, tmp_path)
    first, last = recorder.losses[:4], recorder.losses[-4:]
    assert sum(last) / 4 < 0.7 * sum(first) / 4
    assert all(math.isfinite(x) for x in recorder.losses)
    for key in ("loss", "cls", "reg", "video", "num_pos", "norm"):
        assert f"student/train/{key}" in trainer.callback_metrics
    assert module.ema.num_updates == int(module.ema.updates) == trainer.global_step == 20
    norm = float(module.loss_normalizer)
    assert norm != 16.0
    assert norm == pytest.approx(float(trainer.callback_metrics["student/train/norm"]))
    ema_w = module.ema.module.cls_head.tower.out.conv.weight
    assert not torch.equal(ema_w, module.model.cls_head.tower.out.conv.weight)

    path = tmp_path / "student.ckpt"
    trainer.save_checkpoint(path)
    restored = StudentModule.load_from_checkpoint(path)
    assert float(restored.loss_normalizer) == norm
    assert int(restored.ema.updates) == 20
    for (name, a), b in zip(
        module.ema.module.state_dict().items(),
        restored.ema.module.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), name
    batch = collate(make_videos(2, seed=5))
    for x, y in zip(
        module.predict_batch(batch, use_ema=True),
        restored.predict_batch(batch, use_ema=True),
        strict=True,
    ):
        assert x.shape == y.shape and (x == y).all()


def _set_teacher_bias(module: StudentModule, bias: list[float]) -> None:
    out = module.ema.module.cls_head.tower.out.conv
    with torch.no_grad():
        out.weight.zero_()
        out.bias.copy_(torch.tensor(bias))


def test_targets_before_pseudo_epochs_are_the_batch_targets() -> None:
    module = make_module(epochs_pseudo=1)
    batch = collate(make_videos(3))
    _set_teacher_bias(module, [-20.0, -20.0, 5.0])
    segments, labels, valid = module.batch_targets(batch)
    assert segments is batch["segments"] and labels is batch["labels"]
    assert valid is batch["target_valid"]
    no_ema = make_module(epochs_pseudo=0, ema_decay=None)
    assert no_ema.batch_targets(batch)[0] is batch["segments"]


def test_targets_after_pseudo_epochs_come_from_the_ema_teacher() -> None:
    module = make_module(epochs_pseudo=0, teacher_score_thresh=0.4)
    batch = collate(make_videos(3))
    _set_teacher_bias(module, [-20.0, -20.0, 5.0])  # the teacher sees class 2 everywhere
    segments, labels, valid = module.batch_targets(batch)
    detections = module.predict_batch(batch, use_ema=True)
    assert batch["labels"][:, 0].tolist() == [0, 1, 2]
    assert any((det[:, 2] < 0).any() for det in detections)  # clamping is exercised
    for segs, labs, ok, det in zip(segments, labels, valid, detections, strict=True):
        keep = det[:, 1] > 0.4
        assert keep.sum() >= 1 and int(ok.sum()) == keep.sum()
        assert (labs[ok] == 2).all()
        expected = torch.as_tensor(det[keep, 2:4], dtype=torch.float32).clamp(min=0)
        torch.testing.assert_close(segs[ok], expected)
        assert (segs[ok] >= 0).all() and (segs[ok][:, 1] > segs[ok][:, 0]).all()

    _set_teacher_bias(module, [-20.0, -20.0, -2.0])  # nothing passes 0.4: keep the single best
    segments, labels, valid = module.batch_targets(batch)
    detections = module.predict_batch(batch, use_ema=True)
    for segs, labs, ok, det in zip(segments, labels, valid, detections, strict=True):
        assert int(ok.sum()) == 1 and labs[ok].tolist() == [2]
        best = det[det[:, 1].argmax()]
        torch.testing.assert_close(
            segs[ok][0], torch.tensor(best[2:4], dtype=torch.float32).clamp(0)
        )


def test_teacher_targets_ignore_the_input_noise_and_training_mode() -> None:
    """The teacher predicts on the clean clip: its targets do not depend on the noise seed, while
    the student's training forward does (noise on the whole padded batch)."""
    module = make_module(epochs_pseudo=0, model={**MODEL, "input_noise": 0.5, "drop_path": 0.0})
    module.model.video_dropout.p = 0.0
    batch = collate(make_videos(3))
    module.train()
    targets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        targets.append(module.batch_targets(batch))
    for a, b in zip(*targets, strict=True):
        assert torch.equal(a, b)
    outputs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        outputs.append(module.model(batch["features"], batch["mask"]).cls_logits[0])
    assert not torch.allclose(outputs[0], outputs[1])
    padded = ~batch["mask"][0]
    assert padded.any()
    torch.manual_seed(0)
    feats = batch["features"].clone()
    noisy_first_conv = module.model.backbone.embed[0].conv(feats + 0.5 * torch.randn_like(feats))
    torch.manual_seed(0)
    hooked = {}
    handle = module.model.backbone.embed[0].conv.register_forward_hook(
        lambda mod, inp, out: hooked.setdefault("out", out)
    )
    module.model(batch["features"], batch["mask"])
    handle.remove()
    torch.testing.assert_close(hooked["out"], noisy_first_conv)


def test_ema_blends_from_the_first_update() -> None:
    """The teacher starts as a copy of the student and every update blends (no first-update
    copy): after one step it is ``0.999 * init + 0.001 * student``."""
    module = make_module(ema_decay=0.999)
    init = {k: v.clone() for k, v in module.model.state_dict().items()}
    for k, v in module.ema.module.state_dict().items():
        assert torch.equal(v, init[k]), k
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(torch.randn_like(p))
    module.ema.update(module.model)
    student = module.model.state_dict()
    for k, v in module.ema.module.state_dict().items():
        torch.testing.assert_close(v, 0.999 * init[k] + 0.001 * student[k], rtol=1e-6, atol=1e-7)


def test_ema_warmup_option_changes_the_decay_as_specified() -> None:
    from fustal.student.ema import ModelEMA, ema_decay_at, initial_share

    assert ema_decay_at(0, 0.999, warmup=True) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999, warmup=True) == pytest.approx(91 / 100)
    assert ema_decay_at(10_000, 0.999, warmup=True) == 0.999
    assert ema_decay_at(0, 0.999) == 0.999
    assert initial_share(100, 0.999) == pytest.approx(0.999**100)
    assert initial_share(3, 0.999, warmup=True) == pytest.approx(0.1 * 2 / 11 * 3 / 12)
    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.999, warmup=True)
    init = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, 0.1 * init + 0.9 * model.weight)
    assert ema.initial_share() == pytest.approx(0.1)


def test_distillation_epoch_trains_on_teacher_targets(tmp_path: Path) -> None:
    module = make_module(epochs_pseudo=1, max_epochs=2)
    _, recorder = fit(module, 2, tmp_path)
    assert len(recorder.losses) == 4 and all(math.isfinite(x) for x in recorder.losses)


def test_optimizer_groups_and_schedule() -> None:
    module = make_module()
    decay, no_decay = weight_decay_groups(module.model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    decay_ids = {id(p) for p in decay["params"]}
    assert id(module.model.cls_head.tower.out.conv.weight) in decay_ids
    assert id(module.model.backbone.branch[0].mlp[0].weight) in decay_ids
    for p in (
        module.model.cls_head.tower.out.conv.bias,
        module.model.backbone.embed_norm[0].weight,
        module.model.backbone.branch[0].gn.weight,
        module.model.backbone.branch[0].drop_out.scale,
        module.model.offset_head.scales[0].scale,
    ):
        assert id(p) not in decay_ids
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == sum(p.numel() for p in module.model.parameters())
    # research warmup: base * step / (W - 1): 0 at the first step, base at step W - 1
    assert lr_factor(0, 10, 100, "constant") == 0.0
    assert lr_factor(3, 10, 100, "constant") == pytest.approx(3 / 9)
    assert lr_factor(9, 10, 100, "constant") == 1.0 and lr_factor(500, 10, 100, "constant") == 1.0
    assert lr_factor(55, 10, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, "cosine") == pytest.approx(0.0)


def test_bad_configuration_is_a_fustal_error() -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    with pytest.raises(FustalError, match="schedule"):
        warmup_schedule(optimizer, steps_per_epoch=3, total_steps=9, schedule="linear")
    with pytest.raises(FustalError, match="ema_decay"):
        make_module(ema_decay=1.5)
    with pytest.raises(FustalError):
        make_module(ema_decay=None).predict_batch(collate(make_videos(1)), use_ema=True)


class LrRecorder(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_trainer_lr_is_zero_at_the_first_step_and_base_after_warmup(tmp_path: Path) -> None:
    module = make_module(lr=1e-3, warmup_epochs=1, max_epochs=2, epochs_pseudo=100)
    recorder = LrRecorder()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(make_videos(12), batch_size=4, collate_fn=collate))
    # 3 steps per epoch: warmup over W = 3 steps -> 0, 0.5, 1, then constant
    assert recorder.lrs == pytest.approx([0.0, 5e-4, 1e-3, 1e-3, 1e-3, 1e-3])


class SyncFreeStudent(StudentModule):
    def training_step(self, batch, batch_idx):
        with NoHostSync():
            return super().training_step(batch, batch_idx)


def test_training_step_on_pseudo_labels_has_no_host_sync(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = SyncFreeStudent(FEATURE_DIM, NUM_CLASSES, net=MODEL, max_epochs=1, epochs_pseudo=1)
    trainer, recorder = fit(module, 1, tmp_path)
    assert len(recorder.losses) == 2 and all(math.isfinite(x) for x in recorder.losses)


def test_teacher_readiness_is_logged_and_warned_on_short_schedules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At the switch to distillation the teacher's remaining share of its random initial weights
    is logged; a large share (short schedule, decay 0.999) is warned about before training and at
    the switch, naming a decay that fits; with the decay warm-up it is small and nothing warns."""
    import logging

    from fustal.student.ema import initial_share

    caplog.set_level(logging.INFO, logger="fustal.student.module")
    short = make_module(epochs_pseudo=2, max_epochs=3, ema_decay=0.999)
    trainer, _ = fit(short, 3, tmp_path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # projected before training (the switch only logs it)
    assert "100% of its random initial weights" in warnings[0].getMessage()
    assert "ema.decay <= 0.4729" in warnings[0].getMessage()  # 0.05 ** (1 / 4)
    share = trainer.callback_metrics["student/teacher_init_share"]
    assert float(share) == pytest.approx(initial_share(4, 0.999))

    caplog.clear()
    ready = make_module(epochs_pseudo=2, max_epochs=3, ema_decay=0.999, ema_warmup=True)
    trainer, _ = fit(ready, 3, tmp_path)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("distillation starts" in r.getMessage() for r in caplog.records)
    assert float(trainer.callback_metrics["student/teacher_init_share"]) == pytest.approx(
        initial_share(4, 0.999, warmup=True)
    )


@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_teacher_candidates_from_the_needed_levels_give_the_full_targets(
    seed: int, fallback: bool
) -> None:
    """The teacher runs its boundary heads only on the levels with a candidate above the
    threshold (and, for a video without any, on the level of its best candidate); its targets
    equal those selected from every level's candidates."""
    from fustal.student.decode import level_scores, teacher_targets

    torch.manual_seed(seed)
    net = make_module().model.eval()
    for p in net.cls_head.parameters():  # spread the scores so that levels differ
        p.data.normal_(0.0, 0.5)
    batch = collate(make_videos(2, seed=seed))
    full = net(batch["features"], batch["mask"])
    peaks = torch.stack(
        [
            level_scores(c, m, 2000)[0][:, 0]
            for c, m in zip(full.cls_logits, full.masks, strict=True)
        ],
        1,
    )
    best = peaks.max(dim=1).values
    if fallback:  # a threshold between the two videos' best scores: one video falls back
        thresh = float(best.mean())
        assert (best > thresh).tolist() in ([True, False], [False, True])
    else:  # a threshold that some but not all levels of every video pass
        thresh = float(best.min()) - 1e-4
        assert (peaks > thresh).any(dim=1).all() and not (peaks > thresh).all()
    expected = teacher_targets(net.candidates(full), NUM_CLASSES, thresh)
    got = teacher_targets(
        net.teacher_candidates(batch["features"], batch["mask"], thresh), NUM_CLASSES, thresh
    )
    assert torch.equal(got.valid, expected.valid)
    for a, b in zip(got.to_rows(), expected.to_rows(), strict=True):
        np.testing.assert_array_equal(a, b)
