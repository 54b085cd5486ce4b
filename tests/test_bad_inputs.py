"""Bad-input battery: ``python -m fustal.train`` on a copy of the small synthetic dataset with one
thing broken per case.

Every case must end with exit code 2 and a last stderr line ``error: ...`` that names the file,
video or key and what is wrong (typos in Hydra overrides: Hydra's own message naming the key,
exit code 1), print no traceback, and leave no temp or half-written file behind. Nothing trains:
dataset cases run ``stage=data``, pseudo-label cases ``stage=filter``/``stage=student`` with a
hand-written file that fails validation first. ``NUM_CASES`` is the count quoted in the README.

A case runs the command's app function in this process on the config composed from its
arguments (:func:`in_process`). Cases whose subject is Hydra's part of the command (its own
errors for a mistyped override, the run dir it creates, its record of the chosen options) run
the entry point in a fresh process forked from the test process's server
(:func:`tests.conftest.forked`). ``test_shortcuts_report_what_the_real_command_reports`` checks
that both report exactly what the real ``python -m fustal.train`` command reports.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from fustal.config import CONFIG_DIR
from fustal.errors import EXIT_BAD_INPUT, FustalError, exit_on_error
from fustal.io import atomic_open, ensure_writable_dir, reported_writes, write_json, write_with
from tests.conftest import DEBUG, Forkserver, run_fustal

HYDRA_EXIT = 1
TRAIN_VIDEO = "video_validation_0000002"
TEST_VIDEO = "video_test_0000002"
# the run's record, written before the stages start: Hydra's files, fustal's config.yaml
RECORD_FILES = {
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
    "train.log",
    "config.yaml",
}


@dataclass(frozen=True)
class Broken:
    """What a case changed: extra overrides, and what the error line must contain."""

    overrides: list[str]
    names: list[str]  # the file, video or key the message must name
    what: str  # what is wrong, as the message says it
    exit_code: int = EXIT_BAD_INPUT
    stage: str = "data"
    command_line: bool = False  # the subject is Hydra's part of the command: run it forked


Case = Callable[[Path, Path], Broken]  # (dataset copy, scratch dir) -> Broken
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    """Register a broken-input case under its function name."""
    CASES[fn.__name__] = fn
    return fn


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Rewrite the JSON file ``path`` after ``edit`` changed its data in place."""
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def annotation(root: Path) -> Path:
    return root / "annotations" / "thumos14.json"


def first_segment(data: dict, video: str) -> dict:
    return data["database"][video]["annotations"][0]


def i3d(root: Path, video: str) -> Path:
    return root / "i3d_features" / f"{video}.npy"


def stream(root: Path, subset: str, name: str, video: str) -> Path:
    return root / "features" / subset / name / f"{video}.npy"


def pseudo_file(tmp: Path, results: Any) -> tuple[Path, str]:
    """A pseudo-label file with ``results`` and the override that reads it."""
    path = tmp / "pseudo.json"
    path.write_text(json.dumps(results))
    return path, f"pseudo_labels={path}"


def pseudo_entry(label: str = "Class00", score: float = 0.9, segment: Any = (2.0, 6.0)) -> dict:
    return {"label": label, "score": score, "segment": list(segment)}


# ---------------------------------------------------------------- dataset root and annotations


@case
def root_missing(root: Path, tmp: Path) -> Broken:
    missing = tmp / "no_such_dataset"
    return Broken([f"dataset.root={missing}"], ["dataset.root", str(missing)], "folder not found")


@case
def annotation_missing(root: Path, tmp: Path) -> Broken:
    annotation(root).unlink()
    return Broken([], [str(annotation(root))], "annotation file not found")


@case
def annotation_not_json(root: Path, tmp: Path) -> Broken:
    annotation(root).write_text('{"database": {"video_test_0000001": ')
    return Broken([], [str(annotation(root))], "not valid JSON")


@case
def annotation_not_utf8(root: Path, tmp: Path) -> Broken:
    annotation(root).write_bytes(b"\xff\xfe\x00garbage")
    return Broken([], [str(annotation(root))], "not valid JSON")


@case
def annotation_no_database(root: Path, tmp: Path) -> Broken:
    annotation(root).write_text(json.dumps({"videos": []}))
    return Broken([], [str(annotation(root))], "no 'database' object")


@case
def annotation_top_level_list(root: Path, tmp: Path) -> Broken:
    annotation(root).write_text("[]")
    return Broken([], [str(annotation(root))], "expected a JSON object")


@case
def annotation_entry_not_object(root: Path, tmp: Path) -> Broken:
    edit_json(annotation(root), lambda d: d["database"].update({TEST_VIDEO: [1, 2]}))
    return Broken([], [str(annotation(root)), TEST_VIDEO], "entry is not an object")


@case
def annotation_without_label(root: Path, tmp: Path) -> Broken:
    edit_json(annotation(root), lambda d: first_segment(d, TEST_VIDEO).pop("label"))
    return Broken([], [str(annotation(root)), TEST_VIDEO], "annotation without a 'label'")


@case
def annotation_segment_not_pair(root: Path, tmp: Path) -> Broken:
    edit_json(annotation(root), lambda d: first_segment(d, TEST_VIDEO).update(segment=[1.0]))
    return Broken([], [str(annotation(root)), TEST_VIDEO], "segment must be [start, end]")


@case
def annotation_duration_not_number(root: Path, tmp: Path) -> Broken:
    edit_json(annotation(root), lambda d: d["database"][TEST_VIDEO].update(duration="long"))
    return Broken([], [str(annotation(root)), TEST_VIDEO, "duration"], "not a number")


@case
def wtal_gt_not_json(root: Path, tmp: Path) -> Broken:
    (root / "gt.json").write_text("database:")
    return Broken([], [str(root / "gt.json")], "not valid JSON")


@case
def wtal_segment_not_number(root: Path, tmp: Path) -> Broken:
    edit_json(root / "gt.json", lambda d: first_segment(d, TEST_VIDEO).update(segment=["a", "2"]))
    return Broken([], [str(root / "gt.json"), TEST_VIDEO, "segment start"], "not a number")


@case
def split_file_missing(root: Path, tmp: Path) -> Broken:
    (root / "split_test.txt").unlink()
    return Broken([], [str(root / "split_test.txt")], "split file not found")


@case
def split_lists_unknown_video(root: Path, tmp: Path) -> Broken:
    with open(root / "split_test.txt", "a") as handle:
        handle.write("video_test_9999999\n")
    names = [str(root / "split_test.txt"), "video_test_9999999"]
    return Broken([], names, "is not in the annotation file")


@case
def unknown_subset(root: Path, tmp: Path) -> Broken:
    return Broken(
        ["features.student.train_subset=training"],
        [str(annotation(root)), "'training'"],
        "unknown subset",
    )


@case
def class_missing_from_class_list(root: Path, tmp: Path) -> Broken:
    edit_json(annotation(root), lambda d: first_segment(d, TEST_VIDEO).update(label="Surfing"))
    return Broken(
        ["dataset.classes=[Class00,Class01,Class02]"],
        [str(annotation(root)), TEST_VIDEO, "'Surfing'"],
        "is not in the class list",
    )


@case
def wtal_class_missing_from_class_list(root: Path, tmp: Path) -> Broken:
    # the generator's gt.json must use the classes of the student's annotation file
    edit_json(root / "gt.json", lambda d: first_segment(d, TEST_VIDEO).update(label="Surfing"))
    return Broken([], [str(root / "gt.json"), TEST_VIDEO, "'Surfing'"], "is not in the class list")


@case
def segment_ends_before_start(root: Path, tmp: Path) -> Broken:
    edit_json(annotation(root), lambda d: first_segment(d, TEST_VIDEO).update(segment=[9.0, 4.0]))
    return Broken([], [str(annotation(root)), TEST_VIDEO], "ends before it starts")


@case
def segment_negative_start(root: Path, tmp: Path) -> Broken:
    edit_json(annotation(root), lambda d: first_segment(d, TRAIN_VIDEO).update(segment=[-1.0, 4]))
    return Broken([], [str(annotation(root)), TRAIN_VIDEO], "negative start")


@case
def train_video_without_actions(root: Path, tmp: Path) -> Broken:
    edit_json(annotation(root), lambda d: d["database"][TRAIN_VIDEO].update(annotations=[]))
    return Broken([], [str(annotation(root)), TRAIN_VIDEO], "no annotated action")


@case
def duration_not_positive(root: Path, tmp: Path) -> Broken:
    edit_json(annotation(root), lambda d: d["database"][TRAIN_VIDEO].update(duration=0))
    return Broken([], [str(annotation(root)), TRAIN_VIDEO], "duration must be positive")


# ---------------------------------------------------------------- feature files


@case
def feature_file_missing(root: Path, tmp: Path) -> Broken:
    i3d(root, TEST_VIDEO).unlink()
    return Broken([], [TEST_VIDEO, str(i3d(root, TEST_VIDEO))], "feature file not found")


@case
def stream_file_missing(root: Path, tmp: Path) -> Broken:
    path = stream(root, "train", "flow", TRAIN_VIDEO)
    path.unlink()
    return Broken([], [TRAIN_VIDEO, str(path)], "feature file not found")


@case
def feature_not_npy(root: Path, tmp: Path) -> Broken:
    i3d(root, TEST_VIDEO).write_bytes(b"this is not a numpy file")
    return Broken([], [str(i3d(root, TEST_VIDEO))], "not a readable .npy file (no NumPy header)")


@case
def feature_truncated(root: Path, tmp: Path) -> Broken:
    path = i3d(root, TRAIN_VIDEO)
    path.write_bytes(path.read_bytes()[:-100])
    return Broken([], [str(path)], "not a readable .npy file")


@case
def feature_pickled_objects(root: Path, tmp: Path) -> Broken:
    path = i3d(root, TEST_VIDEO)
    np.save(path, np.array([{"features": 1}], dtype=object), allow_pickle=True)
    return Broken([], [str(path)], "not a readable .npy file")


@case
def feature_rank_1(root: Path, tmp: Path) -> Broken:
    np.save(i3d(root, TEST_VIDEO), np.zeros(50, np.float32))
    return Broken([], [str(i3d(root, TEST_VIDEO)), "(50,)"], "expected a [T, D] array")


@case
def feature_rank_3(root: Path, tmp: Path) -> Broken:
    path = stream(root, "test", "rgb", TEST_VIDEO)
    np.save(path, np.zeros((50, 8, 1), np.float32))
    return Broken([], [str(path), "(50, 8, 1)"], "expected a [T, D] array")


@case
def feature_other_dimension(root: Path, tmp: Path) -> Broken:
    np.save(i3d(root, TEST_VIDEO), np.zeros((50, 12), np.float32))
    return Broken([], [str(i3d(root, TEST_VIDEO)), "12", "16"], "feature dimension")


@case
def feature_configured_dimension(root: Path, tmp: Path) -> Broken:
    return Broken(["features.student.dim=2048"], ["i3d_features", "2048"], "feature dimension 16")


@case
def feature_zero_length(root: Path, tmp: Path) -> Broken:
    np.save(i3d(root, TRAIN_VIDEO), np.zeros((0, 16), np.float32))
    return Broken([], [str(i3d(root, TRAIN_VIDEO))], "empty features")


@case
def feature_integer(root: Path, tmp: Path) -> Broken:
    np.save(i3d(root, TEST_VIDEO), np.zeros((50, 16), np.int64))
    return Broken([], [str(i3d(root, TEST_VIDEO))], "must be floating point")


@case
def feature_nan(root: Path, tmp: Path) -> Broken:
    path = i3d(root, TRAIN_VIDEO)
    feats = np.load(path)
    feats[3, 5] = np.nan
    np.save(path, feats)
    return Broken([], [str(path)], "NaN or Inf")


@case
def feature_inf(root: Path, tmp: Path) -> Broken:
    path = stream(root, "test", "flow", TEST_VIDEO)
    feats = np.load(path)
    feats[-1, 0] = -np.inf
    np.save(path, feats)
    return Broken([], [str(path)], "NaN or Inf")


@case
def feature_nan_found_before_training(root: Path, tmp: Path) -> Broken:
    # every feature file is checked when the data loads, before the generator trains
    path = stream(root, "test", "rgb", TEST_VIDEO)
    feats = np.load(path)
    feats[0, 0] = np.nan
    np.save(path, feats)
    return Broken([], [str(path)], "NaN or Inf", stage="all")


@case
def streams_different_lengths(root: Path, tmp: Path) -> Broken:
    path = stream(root, "train", "rgb", TRAIN_VIDEO)
    np.save(path, np.load(path)[:-3])
    return Broken([], [TRAIN_VIDEO, "rgb", "flow"], "streams have different lengths")


# ---------------------------------------------------------------- pseudo-label files


@case
def pseudo_labels_missing(root: Path, tmp: Path) -> Broken:
    missing = tmp / "no_such_pseudo.json"
    return Broken(
        [f"pseudo_labels={missing}"], ["pseudo_labels", str(missing)], "not found", stage="student"
    )


@case
def pseudo_labels_not_json(root: Path, tmp: Path) -> Broken:
    path = tmp / "pseudo.json"
    path.write_text('{"results": {')
    return Broken([f"pseudo_labels={path}"], [str(path)], "not valid JSON", stage="student")


@case
def pseudo_labels_wrong_schema(root: Path, tmp: Path) -> Broken:
    path, override = pseudo_file(tmp, {"results": {TRAIN_VIDEO: [{"label": "Class00"}]}})
    names = [str(path), TRAIN_VIDEO]
    return Broken([override], names, "detection without score, segment", stage="filter")


@case
def pseudo_labels_unknown_video(root: Path, tmp: Path) -> Broken:
    results = {"results": {TRAIN_VIDEO: [pseudo_entry()], "video_validation_9999": []}}
    path, override = pseudo_file(tmp, results)
    names = [str(path), "video_validation_9999"]
    return Broken([override], names, "not training videos of the dataset", stage="student")


@case
def pseudo_labels_test_video(root: Path, tmp: Path) -> Broken:
    path, override = pseudo_file(tmp, {"results": {TEST_VIDEO: [pseudo_entry()]}})
    names = [str(path), TEST_VIDEO]
    return Broken([override], names, "not training videos of the dataset", stage="filter")


@case
def pseudo_labels_unknown_class(root: Path, tmp: Path) -> Broken:
    path, override = pseudo_file(tmp, {"results": {TRAIN_VIDEO: [pseudo_entry("Surfing")]}})
    names = [str(path), TRAIN_VIDEO, "'Surfing'"]
    return Broken([override], names, "unknown class", stage="filter")


@case
def pseudo_labels_segment_reversed(root: Path, tmp: Path) -> Broken:
    entry = pseudo_entry(segment=(8.0, 3.0))
    path, override = pseudo_file(tmp, {"results": {TRAIN_VIDEO: [entry]}})
    names = [str(path), TRAIN_VIDEO]
    return Broken([override], names, "segment ends before it starts", stage="filter")


@case
def pseudo_labels_empty(root: Path, tmp: Path) -> Broken:
    path, override = pseudo_file(tmp, {"results": {TRAIN_VIDEO: []}})
    return Broken([override], [str(path)], "no pseudo labels", stage="filter")


@case
def pseudo_labels_all_filtered(root: Path, tmp: Path) -> Broken:
    entries = [pseudo_entry(score=0.3, segment=(2.0 + i, 6.0 + i)) for i in range(3)]
    _, override = pseudo_file(tmp, {"results": {TRAIN_VIDEO: entries}})
    names = ["filter=fustal", "min_score=0.4", "filter.min_score"]  # the option: Hydra's record
    return Broken([override], names, "no pseudo label passes", stage="student", command_line=True)


# ---------------------------------------------------------------- configuration and outputs


@case
def override_typo_key(root: Path, tmp: Path) -> Broken:
    names = ["dataset.rooot"]
    return Broken(
        ["dataset.rooot=/data"], names, "Could not override", HYDRA_EXIT, command_line=True
    )


@case
def override_typo_group_option(root: Path, tmp: Path) -> Broken:
    names = ["filter/fustall"]
    return Broken(["filter=fustall"], names, "Could not find", HYDRA_EXIT, command_line=True)


@case
def unknown_stage(root: Path, tmp: Path) -> Broken:
    return Broken(["stage=dat"], ["stage", "'dat'"], "expected one of data, generator")


@case
def unknown_feature_layout(root: Path, tmp: Path) -> Broken:
    names = ["features.student.layout", "'sliding'"]
    return Broken(["features.student.layout=sliding"], names, "expected one of nonoverlap")


@case
def run_dir_not_writable(root: Path, tmp: Path) -> Broken:
    blocker = tmp / "a_file"
    blocker.write_text("")
    run = blocker / "run"
    return Broken([f"hydra.run.dir={run}"], [str(run)], "cannot write", command_line=True)


@case
def cache_dir_not_writable(root: Path, tmp: Path) -> Broken:
    blocker = tmp / "a_file"
    blocker.write_text("")
    return Broken(
        [f"paths.cache_dir={blocker / 'cache'}", "supervision=full"],
        [str(blocker)],
        "Not a directory",
        stage="student",
    )


@case
def data_dir_not_writable(root: Path, tmp: Path) -> Broken:
    # the synthetic dataset is generated on first use under paths.data_dir
    blocker = tmp / "a_file"
    blocker.write_text("")
    return Broken(
        ["dataset.root=null", f"paths.data_dir={blocker / 'data'}"],
        [str(blocker)],
        "Not a directory",
    )


@case
def unknown_key_added(root: Path, tmp: Path) -> Broken:
    names = ["generator.max_step", "generator.max_steps"]
    return Broken(["+generator.max_step=10"], names, "unknown key, nothing reads it")


@case
def moved_key(root: Path, tmp: Path) -> Broken:
    names = ["student.module.ema_decay", "ema.decay"]
    return Broken(["+student.module.ema_decay=0.99"], names, "no longer a key")


@case
def value_of_the_wrong_type(root: Path, tmp: Path) -> Broken:
    return Broken(["student.epochs_pseudo=many"], ["student.epochs_pseudo", "'many'"], "Integer")


@case
def trainer_key_owned_by_a_stage(root: Path, tmp: Path) -> Broken:
    names = ["trainer.max_epochs", "student.epochs_pseudo"]
    return Broken(["+trainer.max_epochs=5"], names, "set per stage by fustal")


# ---------------------------------------------------------------- empty or partial dataset roots


@case
def dataset_root_empty(root: Path, tmp: Path) -> Broken:
    # every input of both views is named in one line
    empty = tmp / "empty"
    empty.mkdir()
    names = [
        str(empty / "gt.json"),
        str(empty / "split_train.txt"),
        str(empty / "split_test.txt"),
        str(annotation(empty)),
        f"generator features (nonoverlap, features/{{subset}}/{{stream}}/{{video}}.npy):"
        f" folder not found: {empty / 'features'}",
        f"student features (overlap, i3d_features/{{video}}.npy): folder not found:"
        f" {empty / 'i3d_features'}",
    ]
    return Broken([f"dataset.root={empty}"], names, "6 inputs missing")


@case
def dataset_root_partial(root: Path, tmp: Path) -> Broken:
    # one layout is missing, the other lacks one file: both are named
    shutil.rmtree(root / "i3d_features")
    path = stream(root, "test", "flow", TEST_VIDEO)
    path.unlink()
    names = [
        f"generator features (nonoverlap, features/{{subset}}/{{stream}}/{{video}}.npy): 1 of 12"
        f" videos lack them, first: video {TEST_VIDEO} (test): feature file not found: {path}",
        f"student features (overlap, i3d_features/{{video}}.npy): 12 of 12 videos lack them"
        f" (folder not found: {root / 'i3d_features'})",
        "dataset.skip_missing=true",
    ]
    return Broken([], names, "feature file not found")


@case
def skip_missing_leaves_no_test_video(root: Path, tmp: Path) -> Broken:
    for path in (root / "i3d_features").glob("video_test_*.npy"):
        path.unlink()
    names = ["dataset.skip_missing", "'test'", str(annotation(root)), "all 4 skipped"]
    return Broken(["dataset.skip_missing=true"], names, "is left")


@case
def skip_missing_leaves_no_video_at_all(root: Path, tmp: Path) -> Broken:
    # stage=all: the error comes before any stage, so no cache entry is made
    shutil.rmtree(root / "features")
    names = ["dataset.skip_missing", "'train'", "the generator's nonoverlap features are missing"]
    return Broken(["dataset.skip_missing=true"], names, "is left", stage="all")


# ---------------------------------------------------------------- custom datasets

# +experiment=custom on the synthetic copy: its thumos14.json as annotations.csv + videos.csv,
# its i3d_features as the one folder of features (16-frame windows every 4 frames)
CUSTOM = [
    "+experiment=custom",
    "features.student.path='i3d_features/{video}.npy'",
    "features.student.sidecar=i3d_features/features.json",
    "features.student.train_subset=validation",
]


def write_custom(root: Path, sidecar: Any = None) -> None:
    """``annotations.csv``, ``videos.csv`` and an ``i3d_features/features.json`` sidecar
    (default: the synthetic layout's timing, each video's fps) from the synthetic copy."""
    database = json.loads(annotation(root).read_text())["database"]
    rows, table = ["video,subset,label,start,end"], ["video,duration,fps"]
    for vid, entry in database.items():
        table.append(f"{vid},{entry['duration']},{entry['fps']}")
        for ann in entry["annotations"]:
            start, end = ann["segment"]
            rows.append(f"{vid},{entry['subset']},{ann['label']},{start},{end}")
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    (root / "videos.csv").write_text("\n".join(table) + "\n")
    timing = sidecar if sidecar is not None else {"window_frames": 16, "stride_frames": 4}
    (root / "i3d_features" / "features.json").write_text(json.dumps(timing))


def edit_lines(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")


@case
def custom_root_without_annotations(root: Path, tmp: Path) -> Broken:
    names = [str(root / "annotations.csv"), str(root / "videos.csv")]
    return Broken(CUSTOM, names, "2 inputs missing")


@case
def custom_csv_start_not_a_number(root: Path, tmp: Path) -> Broken:
    write_custom(root)
    path = root / "annotations.csv"

    def start_soon(row: str) -> str:
        video, subset, label, _, end = row.split(",")
        return ",".join([video, subset, label, "soon", end])

    edit_lines(path, lambda rows: [start_soon(r) if r.startswith(TEST_VIDEO) else r for r in rows])
    return Broken(CUSTOM, [str(path), TEST_VIDEO, "segment start", "'soon'"], "not a number")


@case
def custom_csv_wrong_header(root: Path, tmp: Path) -> Broken:
    write_custom(root)
    path = root / "annotations.csv"
    edit_lines(path, lambda rows: ["video,split,label,start,end", *rows[1:]])
    return Broken(CUSTOM, [str(path), "video,subset,label,start,end"], "expected the header")


@case
def custom_csv_video_not_in_table(root: Path, tmp: Path) -> Broken:
    write_custom(root)
    edit_lines(root / "videos.csv", lambda rows: [r for r in rows if not r.startswith(TEST_VIDEO)])
    names = [str(root / "annotations.csv"), TEST_VIDEO, str(root / "videos.csv")]
    return Broken(CUSTOM, names, "not in the video table")


@case
def custom_table_duration_not_a_number(root: Path, tmp: Path) -> Broken:
    write_custom(root)
    edit_lines(
        root / "videos.csv",
        lambda rows: [f"{TRAIN_VIDEO},long,30" if r.startswith(TRAIN_VIDEO) else r for r in rows],
    )
    names = [str(root / "videos.csv"), TRAIN_VIDEO, "duration", "'long'"]
    return Broken(CUSTOM, names, "not a number")


@case
def custom_sidecar_missing(root: Path, tmp: Path) -> Broken:
    write_custom(root)
    sidecar = root / "i3d_features" / "features.json"
    sidecar.unlink()
    names = ["features.student.window_frames", str(sidecar)]
    return Broken(CUSTOM, names, "not set, and the sidecar")


@case
def custom_sidecar_not_a_number(root: Path, tmp: Path) -> Broken:
    write_custom(root, {"fps": 25, "window_frames": 16, "stride_frames": "4"})
    names = [str(root / "i3d_features" / "features.json"), "stride_frames", "'4'"]
    return Broken(CUSTOM, names, "expected a positive number")


@case
def custom_sidecar_disagrees_with_the_config(root: Path, tmp: Path) -> Broken:
    write_custom(root)
    names = ["features.student.stride_frames", "8", str(root / "i3d_features" / "features.json")]
    return Broken([*CUSTOM, "features.student.stride_frames=8"], names, "disagrees with")


NUM_CASES = len(CASES)


def command(root: Path, tmp: Path, stage: str, *overrides: str) -> list[str]:
    """Arguments of ``python -m fustal.train`` on the dataset at ``root``, writing under ``tmp``."""
    return [
        *DEBUG,
        f"dataset.root={root}",
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={tmp / 'run'}",
        f"stage={stage}",
        *overrides,
    ]


def in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess:
    """What ``python -m fustal.train ARGS`` runs once Hydra has composed its config (the app
    function, its one-line errors and exit codes included), in this process; the run dir is the
    one ``hydra.run.dir`` names."""
    from fustal.train import main

    run_dir = next(arg.split("=", 1)[1] for arg in args if arg.startswith("hydra.run.dir="))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*args, f"paths.output_dir={run_dir}"])
    capsys.readouterr()
    try:
        main.__wrapped__(cfg)  # the function under @hydra.main
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def leftovers(tmp: Path, dataset: Path) -> list[str]:
    """Files a failed run left: temp files anywhere, anything in the stage cache, anything in
    the run dir besides the run's record (:data:`RECORD_FILES`)."""
    found = [
        str(p)
        for p in tmp.rglob("*")
        if ".tmp" in p.name or p.name.endswith(".stale") or p.name.startswith(".lock")
    ]
    run = tmp / "run"
    if run.is_dir():
        found += [
            str(p)
            for p in run.rglob("*")
            if p.is_file() and p.relative_to(run).as_posix() not in RECORD_FILES
        ]
    found += [str(p) for p in dataset.rglob(".*")]
    found += [str(p) for p in (tmp / "cache").rglob("*")]
    return found


@pytest.fixture
def dataset(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the small synthetic dataset, free to break."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "dataset"))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_one_line_error(
    name: str,
    dataset: Path,
    tmp_path: Path,
    forked: Forkserver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = CASES[name](dataset, tmp_path)
    args = command(dataset, tmp_path, broken.stage, *broken.overrides)
    proc = forked("train", *args) if broken.command_line else in_process(args, capsys)
    assert proc.returncode == broken.exit_code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    if broken.exit_code == EXIT_BAD_INPUT:
        message = [line for line in proc.stderr.splitlines() if line.strip()][-1]
        assert message.startswith("error: "), proc.stderr[-3000:]
    else:
        message = proc.stderr  # Hydra's own multi-line report
    for needle in [broken.what, *broken.names]:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert leftovers(tmp_path, dataset) == []


def test_shortcuts_report_what_the_real_command_reports(
    synthetic_root: Path,
    tmp_path: Path,
    forked: Forkserver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The in-process and the forked shortcuts report exactly what ``python -m
    fustal.train`` reports."""
    runners = {
        "in_process": lambda args: in_process(args, capsys),
        "forked": lambda args: forked("train", *args),
        "real": lambda args: run_fustal("train", *args),
    }
    outcomes = []
    for runner, run in runners.items():
        tmp = tmp_path / runner
        root = Path(shutil.copytree(synthetic_root, tmp / "dataset"))
        broken = CASES["feature_nan"](root, tmp)
        proc = run(command(root, tmp, broken.stage, *broken.overrides))
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
        outcomes.append((proc.returncode, last.replace(str(tmp), "TMP")))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0][0] == EXIT_BAD_INPUT


def test_missing_features_skipped_with_counted_warning(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    i3d(dataset, TEST_VIDEO).unlink()
    stream(dataset, "train", "rgb", TRAIN_VIDEO).unlink()
    proc = in_process(command(dataset, tmp_path, "data", "dataset.skip_missing=true"), capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = caplog.text  # the command prints its log records
    assert "skipping 1 'test' videos without feature files" in output
    assert "skipping 1 'train' videos without feature files" in output


def test_segments_past_the_duration_are_clipped_with_a_count(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def stretch(data: dict) -> None:
        for video in (TRAIN_VIDEO, TEST_VIDEO):
            entry = data["database"][video]
            entry["annotations"][-1]["segment"][1] = entry["duration"] + 3.0

    edit_json(annotation(dataset), stretch)
    proc = in_process(command(dataset, tmp_path, "data"), capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "clipped 2 segments that end after" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- write faults, in process


def disk_full(*args: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_keeps_the_old_file_and_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run" / "metrics.json"
    write_json(target, {"old": 1})
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(FustalError, match=f"cannot write {target}: No space left on device"):
        write_json(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_disk_full_in_a_writer_leaves_no_partial_file(tmp_path: Path) -> None:
    def half_then_full(tmp: str) -> None:
        Path(tmp).write_bytes(b"\x93NUMPY half")
        disk_full()

    target = tmp_path / "features" / "v.npy"
    with pytest.raises(FustalError, match=f"cannot write {target}: No space left on device"):
        write_with(target, half_then_full)
    assert list(target.parent.iterdir()) == []


def test_output_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(FustalError, match=f"cannot write {blocker / 'run'}: Not a directory"):
        ensure_writable_dir(blocker / "run")
    target = blocker / "run" / "metrics.json"
    with pytest.raises(FustalError, match=f"cannot write {target}: Not a directory"):
        write_json(target, {})
    with pytest.raises(FustalError, match="cannot write"), atomic_open(blocker / "x.csv") as out:
        out.write("never")
    assert blocker.read_text() == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir(
    dataset: Path,
    tmp_path: Path,
    forked: Forkserver,
) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o500)
    try:
        with pytest.raises(FustalError, match=f"cannot write {read_only}: Permission denied"):
            ensure_writable_dir(read_only)
        with pytest.raises(FustalError, match="Permission denied"):
            write_json(read_only / "metrics.json", {})
        args = command(dataset, tmp_path, "data", f"hydra.run.dir={read_only}")
        proc = forked("train", *args)
        assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-3000:]
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
        assert last == f"error: cannot write {read_only}: Permission denied"
        assert list(read_only.iterdir()) == []
    finally:
        read_only.chmod(0o700)


def test_entry_points_print_write_errors_as_one_line(capsys: pytest.CaptureFixture) -> None:
    @exit_on_error
    def reported() -> None:
        with reported_writes("/runs/x/metrics.json"):
            disk_full()

    @exit_on_error
    def raw() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/last.ckpt")

    for entry, line in [
        (reported, "error: cannot write /runs/x/metrics.json: No space left on device"),
        (raw, "error: No space left on device: /runs/x/last.ckpt"),
    ]:
        with pytest.raises(SystemExit) as stop:
            entry()
        assert stop.value.code == EXIT_BAD_INPUT
        assert capsys.readouterr().err == line + "\n"


def test_readme_quotes_the_number_of_cases() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"**{NUM_CASES} bad inputs tried, {NUM_CASES} clear errors**" in readme
