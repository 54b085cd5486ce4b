"""``python -m fustal.extract``: features of tiny generated videos (a square moving over a plain
background, its colour the action's class) with a randomly initialised backbone, resuming,
training ``+experiment=custom`` on them and ``fustal.predict`` on the video files."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from fustal.config import make_console
from fustal.extract.__main__ import main as extract_main
from fustal.extract.backbones import BACKBONES, build_backbone
from fustal.extract.decode import clips, probe, sample_frames
from fustal.extract.extractor import ExtractConfig, extract_folder
from fustal.pipeline.run import run_pipeline
from tests.conftest import Forkserver, compose_train
from tests.test_entry_points import assert_exit_2, assert_same_detections, predict

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}
CLASSES = sorted(COLOURS)
VIDEO_FPS = 10
# mc3_18 (the fastest backbone) on 16-pixel crops: 8-frame clips every 4 frames at 8 fps
OPTIONS = {
    "backbone": "mc3_18",
    "weights": "none",
    "fps": 8.0,
    "window": 8,
    "stride": 4,
    "crop_size": 16,
    "batch_size": 8,
    "device": "cpu",
}
ARGS = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]


def write_video(path: Path, seconds: float, action: tuple[str, float, float] | None) -> None:
    """An mpeg4 video of 48x64 frames at 10 fps: a light square drifting right over a grey
    background that takes the action's class colour while the action lasts."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(round(seconds * VIDEO_FPS)):
            t = k / VIDEO_FPS
            acting = action is not None and action[1] <= t < action[2]
            image = np.empty((48, 64, 3), np.uint8)
            image[:] = COLOURS[action[0]] if acting else (90, 90, 90)
            x = (4 * k) % 48
            image[14:34, x : x + 16] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@dataclass
class Videos:
    folder: Path
    rows: list[str]  # annotation CSV rows


def make_videos(folder: Path, subset: str, count: int, offset: int) -> list[str]:
    """``count`` videos of 4-5 s into ``folder``, one action each; their annotation rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(offset, offset + count):
        label = CLASSES[i % len(CLASSES)]
        start = 0.5 + 0.5 * (i % 3)
        write_video(folder / f"{subset}_{i}.mp4", 4.0 + 0.5 * (i % 2), (label, start, start + 2))
        rows.append(f"{subset}_{i},{subset},{label},{start},{start + 2}")
    return rows


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Videos:
    folder = tmp_path_factory.mktemp("videos")
    rows = make_videos(folder, "train", 6, 0) + make_videos(folder, "test", 3, 6)
    return Videos(folder, rows)


def test_sampling_and_clips(videos: Videos) -> None:
    path = videos.folder / "train_1.mp4"  # 4.5 s at 10 fps
    info = probe(path)
    assert info.duration == pytest.approx(4.5) and info.fps == VIDEO_FPS
    frames = list(sample_frames(path, 8.0, (37, 49), 32))
    assert len(frames) == 36 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    windows = list(clips(iter(frames), 8, 4))
    assert len(windows) == (36 - 8) // 4 + 1
    np.testing.assert_array_equal(windows[1][0], frames[4])
    (short,) = clips(iter(frames[:5]), 8, 4)  # shorter than a window: the last frame repeats
    np.testing.assert_array_equal(short[5:], np.stack([frames[4]] * 3))


def test_random_backbones_are_reproducible() -> None:
    a, b = (build_backbone("mc3_18", pretrained=False, seed=3) for _ in range(2))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert x.equal(y), name
    assert (
        not build_backbone("mc3_18", pretrained=False, seed=4)
        .stem[0]
        .weight.equal(a.stem[0].weight)
    )


def test_extract_writes_the_custom_layout_and_resumes(videos: Videos, tmp_path: Path) -> None:
    out = tmp_path / "features"
    extract_main([str(videos.folder), str(out), *ARGS])
    feats = {p.stem: np.load(p) for p in out.glob("*.npy")}
    assert len(feats) == 9
    for vid, array in feats.items():
        seconds = 4.0 + 0.5 * (int(vid.split("_")[1]) % 2)
        assert array.shape == ((int(seconds * 8) - 8) // 4 + 1, 512)
        assert array.dtype == np.float32 and np.isfinite(array).all()
    sidecar = json.loads((out / "features.json").read_text())
    assert sidecar == {
        "fps": 8.0,
        "window_frames": 8,
        "stride_frames": 4,
        "extractor": {
            "tool": "fustal.extract",
            "backbone": "mc3_18",
            "weights": "none",
            "seed": 0,
            "crop_size": 16,
            "resize_size": [18, 24],
            "dim": 512,
        },
    }
    table = (out / "videos.csv").read_text().splitlines()
    assert table[0] == "video,duration,fps" and "train_1,4.500000,10" in table
    # resumed: finished videos are skipped, an unfinished one is extracted again
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    (out / "test_7.npy").write_bytes(b"\x93NUMPY truncated")
    console = make_console()
    with console.capture() as captured:
        extract_folder(videos.folder, out, ExtractConfig(**OPTIONS), console)
    assert "(8 done before)" in captured.get()
    for path in out.glob("*.npy"):
        assert (path.stat().st_mtime_ns == mtimes[path.name]) == (path.name != "test_7.npy")
    np.testing.assert_array_equal(np.load(out / "test_7.npy"), feats["test_7"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_extract_refuses_a_folder_of_other_features(
    videos: Videos, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "features"
    out.mkdir()
    (out / "features.json").write_text(
        json.dumps({"fps": 8.0, "window_frames": 16, "stride_frames": 4})
    )
    with pytest.raises(SystemExit) as exited:
        extract_main([str(videos.folder), str(out), *ARGS])
    assert exited.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: {out / 'features.json'}: ") and "another folder" in line
    assert list(out.iterdir()) == [out / "features.json"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backbone=mvit_v2_s", "--window=8"], "exactly 16 frames of 224 pixels"),
        (["--stride=0"], "stride: expected a positive integer"),
        (["--fps=fast"], "argument --fps: invalid float value: 'fast'"),
        (["--backbone=i3d"], "argument --backbone: invalid choice: 'i3d'"),
    ],
)
def test_extract_bad_options(
    videos: Videos, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], needle: str
) -> None:
    argv = [str(videos.folder), str(tmp_path / "out"), "--weights=none", *args]
    assert_exit_2(capsys, lambda: extract_main(argv), needle)
    assert not (tmp_path / "out").exists()


def test_torchvision_backbones_without_torchvision(
    videos: Videos,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if it were not installed
    argv = [str(videos.folder), str(tmp_path / "out"), "--weights=none", "--backbone=s3d"]
    needles = ("backbone s3d: needs torchvision", "fustal[video]")
    assert_exit_2(capsys, lambda: extract_main(argv), *needles)
    assert not (tmp_path / "out").exists()


def test_extract_command_line(videos: Videos, tmp_path: Path, forked: Forkserver) -> None:
    proc = forked("extract", "--help")
    assert proc.returncode == 0 and "r2plus1d_18 (512, 112 px)" in proc.stdout
    proc = forked("extract", str(videos.folder))
    assert proc.returncode == 2
    assert proc.stderr == "error: the following arguments are required: OUT_DIR\n"


def test_extract_bad_videos(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    for argv, needle in (
        ([str(tmp_path / "none"), str(tmp_path / "out")], "video folder not found"),
        ([str(folder), str(tmp_path / "out")], "no video files"),
    ):
        assert_exit_2(capsys, lambda a=argv: extract_main([*a, *ARGS]), needle)
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 100)
    assert_exit_2(
        capsys, lambda: extract_main([str(folder), str(tmp_path / "out"), *ARGS]), "broken.mp4"
    )


def test_train_and_predict_on_videos(videos: Videos, tmp_path: Path) -> None:
    """Extract, train ``+experiment=custom`` on the features, predict on the test videos: the
    same detections as on their extracted features; a checkpoint of other features refuses
    video files."""
    root = tmp_path / "dataset"
    extract_main([str(videos.folder), str(root / "features"), *ARGS])
    (root / "annotations.csv").write_text("\n".join(["video,subset,label,start,end", *videos.rows]))
    cfg = compose_train(
        tmp_path,
        "+experiment=custom",
        f"dataset.root={root}",
        "features.student.video_table=features/videos.csv",
        "plot_videos=0",
        "ema.decay=0.5",
    )
    run_pipeline(cfg)
    (student,) = (tmp_path / "cache" / "student").glob("*/student.ckpt")
    test_videos = tmp_path / "test_videos"
    test_features = tmp_path / "test_features"
    test_videos.mkdir()
    test_features.mkdir()
    for i in (6, 7, 8):
        shutil.copy(videos.folder / f"test_{i}.mp4", test_videos)
        shutil.copy(root / "features" / f"test_{i}.npy", test_features)
    shutil.copy(root / "features" / "features.json", test_features)
    on_videos = predict(
        f"ckpt_path={student}", f"features={test_videos}", f"out={tmp_path / 'videos.json'}"
    )["results"]
    durations = {f"test_{i}": 4.0 + 0.5 * (i % 2) for i in (6, 7, 8)}
    (tmp_path / "durations.json").write_text(json.dumps(durations))
    on_features = predict(
        f"ckpt_path={student}",
        f"features={test_features}",
        f"out={tmp_path / 'features.json'}",
        f"durations={tmp_path / 'durations.json'}",
    )["results"]
    assert set(on_videos) == set(durations) and any(on_videos.values())
    for vid in durations:
        assert_same_detections(on_videos[vid], on_features[vid])


def test_predict_refuses_videos_for_features_of_another_extractor(
    videos: Videos, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A checkpoint trained on features that fustal.extract did not make cannot take videos."""
    from tests.test_custom_dataset import custom_overrides, write_custom

    root = tmp_path / "dataset"
    write_custom(root)
    run_pipeline(compose_train(tmp_path, *custom_overrides(root), "stage=generator"))
    (generator,) = (tmp_path / "cache" / "generator").glob("*/generator.ckpt")
    out = tmp_path / "detections.json"
    overrides = (f"ckpt_path={generator}", f"features={videos.folder}", f"out={out}")
    needles = (str(generator), "not made by fustal.extract", "of an unrecorded extractor")
    assert_exit_2(capsys, lambda: predict(*overrides), *needles)
    assert not out.exists()


def test_backbone_table_matches_the_networks() -> None:
    import torch

    for name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        model = build_backbone(name, pretrained=False, seed=0)
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, 4, 32, 32))
        assert out.shape == (1, BACKBONES[name].dim)
