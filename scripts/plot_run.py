"""Redraw the pictures of a finished run from its run dir alone (no data, no checkpoints).

    python scripts/plot_run.py outputs/runs/<date>_<time>

Reads ``RUN_DIR/pictures/inputs.json`` (and ``cas.npz`` when present), written by
``python -m fustal.train`` with ``plot_videos > 0``, and rewrites ``timeline_<video>.png`` per
video and ``pseudo_label_pr.png`` beside them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fustal.errors import exit_on_error  # noqa: E402
from fustal.viz.rundir import draw_run  # noqa: E402


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="run dir of python -m fustal.train")
    args = parser.parse_args(argv)
    for path in draw_run(args.run_dir):
        print(path)


if __name__ == "__main__":
    main()
