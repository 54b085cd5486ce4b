"""docs/extending.md as a user follows it: a filter and a generator written in the user's own
files outside the package, their config files in the user's own config dir
(``hydra.searchpath``), run through the pipeline; their errors are one line."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from fustal.errors import FustalError
from fustal.pipeline.cache import user_target_files
from fustal.pipeline.run import run_pipeline
from tests.conftest import TINY_STUDENT, DebugRun, compose_train, train

MY_FILTERS = '''
"""A user's pseudo-label filter: keep the labels at least ``min_seconds`` long."""
import numpy as np


def keep_long(rows: np.ndarray, min_seconds: float = 1.0) -> np.ndarray:
    """One video's [K, 4] rows (class, score, start s, end s) in, kept rows out."""
    return rows[rows[:, 3] - rows[:, 2] >= min_seconds]
'''

MY_GENERATOR = '''
"""A user's generator: a linear CAS trained on the video labels (top-k mean pooling), its
proposals the runs of snippets whose CAS passes 0.5 in the classes the video scores above 0.5."""
import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn


class LinearGenerator(pl.LightningModule):
    def __init__(
        self,
        feature_dim,
        num_classes,
        num_segments,
        tiou_thresholds=(),
        classes=(),
        feature_timing=None,
        lr=0.01,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.cas_head = nn.Linear(feature_dim, num_classes)

    def video_logits(self, batch):
        cas = self.cas_head(batch["features"])  # [B, T, C]
        k = max(1, cas.shape[1] // 8)
        return cas, cas.topk(k, dim=1).values.mean(dim=1)  # [B, T, C], [B, C]

    def training_step(self, batch, batch_idx):
        _, logits = self.video_logits(batch)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"].float())
        self.log("generator/train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def predict_step(self, batch, batch_idx):
        cas, logits = self.video_logits(batch)
        cas, scores = torch.sigmoid(cas), torch.sigmoid(logits)
        detections = []
        for v in range(cas.shape[0]):
            steps, rows = int(batch["valid"][v]), []
            seconds = float(batch["seconds_per_step"][v])
            for c in torch.nonzero(scores[v] > 0.5).flatten().tolist():
                above = np.r_[0, (cas[v, :steps, c] > 0.5).cpu().numpy().astype(int), 0]
                edges = np.flatnonzero(np.diff(above))
                for start, end in zip(edges[::2], edges[1::2]):
                    score = float(cas[v, start:end, c].mean() * scores[v, c])
                    rows.append([c, score, start * seconds, end * seconds])
            detections.append(np.asarray(rows, dtype=np.float64).reshape(-1, 4))
        return {
            "video_id": list(batch["video_id"]),
            "generator": detections,
            "video_scores": [s.cpu().double().numpy() for s in scores],
        }
'''

FILTER_CONFIG = """\
_target_: my_filters.keep_long
min_seconds: 2.0
"""
GENERATOR_CONFIG = """\
max_steps: 40
val_every: 40
module:
  _target_: my_generator.LinearGenerator
  lr: 0.05
data:
  _target_: fustal.data.generator_datamodule.GeneratorDataModule
  num_segments: 64
  batch_size: 4
  eval_batch_size: 6
"""
# debug=default's sizes without its generator network keys (a user's generator has its own):
# scale=paper leaves the group files as they are
USER_GENERATOR_RUN = [
    "scale=paper",
    "dataset.synthetic.num_classes=3",
    "dataset.synthetic.train_videos=12",
    "dataset.synthetic.test_videos=6",
    "dataset.synthetic.min_duration=20",
    "dataset.synthetic.max_duration=40",
    "dataset.synthetic.feature_dim=16",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "generator=linear",
    "filter=keep_long",
    *TINY_STUDENT,
    "student.module.net.max_seq_len=320",
    "plot_videos=1",
]


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's folder: ``my_filters.py``, ``my_generator.py`` and ``my_conf/`` with a
    ``filter`` and a ``generator`` config file; importable as from their working directory."""
    user = tmp_path / "user"
    (user / "my_conf" / "filter").mkdir(parents=True)
    (user / "my_conf" / "generator").mkdir()
    (user / "my_filters.py").write_text(textwrap.dedent(MY_FILTERS))
    (user / "my_generator.py").write_text(textwrap.dedent(MY_GENERATOR))
    (user / "my_conf" / "filter" / "keep_long.yaml").write_text(FILTER_CONFIG)
    (user / "my_conf" / "generator" / "linear.yaml").write_text(GENERATOR_CONFIG)
    monkeypatch.syspath_prepend(str(user))
    return user


def searchpath(user: Path) -> str:
    return f"hydra.searchpath=[file://{user / 'my_conf'}]"


def test_a_filter_in_the_users_file_filters_the_pseudo_labels(
    tmp_path: Path, user_dir: Path, debug_run: DebugRun, capsys: pytest.CaptureFixture
) -> None:
    data = debug_run.seed(tmp_path)  # the generator is reused: only the filter is new
    metrics = train(tmp_path, data, searchpath(user_dir), "filter=keep_long")
    out = capsys.readouterr().out
    assert "generator: reusing" in out
    assert "pseudo labels kept (my_filters.keep_long(min_seconds=2.0))" in out
    filtered = json.loads((tmp_path / "run" / "pseudo_labels.filtered.json").read_text())
    lengths = [e["segment"][1] - e["segment"][0] for v in filtered["results"].values() for e in v]
    raw = json.loads((debug_run.run / "pseudo_labels.json").read_text())["results"]
    short = [e for v in raw.values() for e in v if e["segment"][1] - e["segment"][0] < 2.0]
    assert lengths and min(lengths) >= 2.0 and short  # it removed something, and only that
    stats = metrics["pseudo_labels"]["filter_stats"]
    assert stats["after"] == len(lengths) == stats["before"] - len(short)
    assert "student_ema" in metrics

    # editing the user's filter file recomputes the student (the file is part of its key)
    assert user_target_files({"_target_": "my_filters.keep_long"}) == [
        (user_dir / "my_filters.py").resolve()
    ]
    (user_dir / "my_filters.py").write_text(textwrap.dedent(MY_FILTERS) + "\n# edited\n")
    train(tmp_path, data, searchpath(user_dir), "filter=keep_long")
    out = capsys.readouterr().out
    assert "generator: reusing" in out and "student: reusing" not in out
    assert len(list((tmp_path / "cache" / "student").iterdir())) == 3


def test_a_generator_module_and_a_filter_of_the_users_label_the_student(
    tmp_path: Path, user_dir: Path
) -> None:
    cfg = compose_train(tmp_path, searchpath(user_dir), *USER_GENERATOR_RUN, debug=False)
    metrics = run_pipeline(cfg)
    for section in ("generator", "student", "student_ema"):
        assert 0.0 <= metrics[section]["test"]["avg"] <= 1.0
    assert metrics["pseudo_labels"]["raw"]["count"] > 0
    pseudo = json.loads((tmp_path / "run" / "pseudo_labels.json").read_text())["results"]
    (root,) = (tmp_path / "data" / "synthetic").iterdir()
    assert set(pseudo) == set((root / "split_train.txt").read_text().split())
    (entry,) = (tmp_path / "cache" / "generator").iterdir()
    assert (entry / "generator_video_scores.json").is_file()


def test_a_users_generator_that_logs_no_held_out_metric_cannot_choose_its_step(
    tmp_path: Path, user_dir: Path
) -> None:
    """With held-out videos the generator's step is chosen by ``generator/val/avg``: a module
    whose validation loop logs something else is a one-line error naming the key; without a
    validation loop it keeps its last step."""
    # a module of its own: my_generator may already be imported from another test's folder
    (user_dir / "my_validated_generator.py").write_text(
        textwrap.dedent(MY_GENERATOR)
        + "\n\nclass Validated(LinearGenerator):\n"
        + "    def validation_step(self, batch, batch_idx):\n"
        + "        self.log('my/score', 1.0)\n"
    )
    held = ["validation=heldout", "validation.fraction=0.25", "stage=generator"]
    validated = "generator.module._target_=my_validated_generator.Validated"
    user = [searchpath(user_dir), *USER_GENERATOR_RUN, *held]
    cfg = compose_train(tmp_path, *user, validated, debug=False)
    with pytest.raises(FustalError, match=re.escape("logs no 'generator/val/avg'")):
        run_pipeline(cfg)
    plain = compose_train(tmp_path, *user, debug=False)
    metrics = run_pipeline(plain)
    assert "selected" not in metrics["generator"] and "val" in metrics["generator"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["filter._target_=my_filters.keep_lon"], "filter._target_: cannot import"),
        (["filter=keep_long", "+filter.min_second=3"], "filter.min_second: unknown key"),
        (["filter=keep_long", "+filter.min_second=3"], "did you mean filter.min_seconds?"),
        (["filter._target_=no_such_module.f"], "is its folder the working directory"),
        (["generator=linear", "+generator.module.depth=3"], "generator.module.depth: unknown"),
    ],
)
def test_a_wrong_plug_in_config_is_a_one_line_error(
    tmp_path: Path, user_dir: Path, overrides: list[str], message: str
) -> None:
    cfg = compose_train(tmp_path, searchpath(user_dir), "scale=paper", *overrides, debug=False)
    with pytest.raises(FustalError, match=re.escape(message)):
        run_pipeline(cfg)
