"""``python -m fustal.extract VIDEO_DIR OUT_DIR [options]``: video files -> features.

An argparse command rather than a Hydra app: it takes two positional folders, composes nothing
from ``conf/`` and writes only into ``OUT_DIR`` (no run dir); its options are the fields of
:class:`fustal.extract.extractor.ExtractConfig`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fustal.config import make_console
from fustal.errors import FustalError, exit_on_error
from fustal.extract.backbones import BACKBONES
from fustal.extract.extractor import WEIGHTS, ExtractConfig, extract_folder

DEFAULTS = ExtractConfig()
EPILOG = (
    "backbones (feature dim, input): "
    + "; ".join(f"{b.name} ({b.dim}, {b.crop_size} px)" for b in BACKBONES.values())
    + ". r3d_18, mc3_18 and r2plus1d_18 need only PyTorch; s3d, mvit_v2_s and swin3d_t need"
    " torchvision (pip install 'fustal[video]'). Kinetics-400 weights are downloaded on first use"
    " into torch's hub cache. Videos whose feature file is complete are skipped: rerun the same"
    " command to resume."
)


class Parser(argparse.ArgumentParser):
    """Bad arguments are a :class:`FustalError` (one ``error:`` line, exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise FustalError(message)


def parser() -> Parser:
    p = Parser(
        prog="python -m fustal.extract",
        description=(
            "Features of every video of VIDEO_DIR: OUT_DIR/<video>.npy [T, D] (clip g covers"
            " frames [g*stride, g*stride+window) at --fps), OUT_DIR/features.json and"
            " OUT_DIR/videos.csv; the layout fustal.train +experiment=custom reads."
        ),
        epilog=EPILOG,
    )
    p.add_argument("video_dir", type=Path, metavar="VIDEO_DIR")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--backbone", choices=list(BACKBONES), default=DEFAULTS.backbone)
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default=DEFAULTS.weights,
        help="kinetics400, or none: random weights drawn from --seed (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="(default: %(default)s)")
    p.add_argument(
        "--fps", type=float, default=DEFAULTS.fps, help="frames sampled per second (%(default)s)"
    )
    p.add_argument(
        "--window", type=int, default=DEFAULTS.window, help="frames per clip (%(default)s)"
    )
    p.add_argument(
        "--stride", type=int, default=DEFAULTS.stride, help="frames between clips (%(default)s)"
    )
    p.add_argument(
        "--crop-size", type=int, default=None, help="pixels (default: the backbone's input size)"
    )
    p.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, help="clips per forward pass"
    )
    p.add_argument(
        "--device", default=DEFAULTS.device, help="auto (a GPU when there is one), cpu, cuda, ..."
    )
    return p


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    args = vars(parser().parse_args(argv))
    video_dir, out_dir = args.pop("video_dir"), args.pop("out_dir")
    cfg = ExtractConfig(**args)
    console = make_console()
    infos = extract_folder(video_dir.expanduser(), out_dir.expanduser(), cfg, console)
    console.print(f"extract: features of {len(infos)} videos in {out_dir}")


if __name__ == "__main__":
    main()
