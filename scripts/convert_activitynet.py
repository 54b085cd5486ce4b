"""Convert BSN's processed ActivityNet v1.3 annotations to the official ActivityNet schema.

    python scripts/convert_activitynet.py data/annotations/activitynet13 \
        --out data/annotations/activitynet13/activitynet13.json

Input: ``anet_anno_action.json`` ({"v_<id>": {duration_second, annotations: [{segment, label}]}})
and ``video_info_new.csv`` (columns video, numFrame, seconds, fps, rfps, subset, featureFrame).
Output: ``{"version", "database": {<id>: {"subset", "duration", "fps", "annotations"}}}`` with the
YouTube id as key (the official schema's keys, without BSN's ``v_`` prefix).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fustal.errors import FustalError, exit_on_error  # noqa: E402
from fustal.io import read_json, write_json  # noqa: E402


def convert(anno_path: Path, info_path: Path) -> dict:
    """Merge BSN's annotation json and video-info csv into the ActivityNet schema."""
    anno = read_json(anno_path, "BSN annotation file")
    if not info_path.is_file():
        raise FustalError(f"video info file not found: {info_path}")
    database = {}
    with open(info_path, newline="") as handle:
        for row in csv.DictReader(handle):
            vid = row["video"]
            if vid not in anno:
                raise FustalError(f"{info_path}: video {vid} is not in {anno_path}")
            entry = anno[vid]
            key = vid[2:] if vid.startswith("v_") else vid
            database[key] = {
                "subset": row["subset"],
                "duration": float(entry["duration_second"]),
                "fps": float(row["fps"]),
                "annotations": [
                    {
                        "label": a["label"],
                        "segment": [float(a["segment"][0]), float(a["segment"][1])],
                    }
                    for a in entry.get("annotations", [])
                ],
            }
    return {"version": "ActivityNet-v1.3 (BSN-processed subset)", "database": database}


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="folder with the BSN files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    data = convert(args.src / "anet_anno_action.json", args.src / "video_info_new.csv")
    write_json(args.out, data, indent=None)
    subsets: dict[str, int] = {}
    for entry in data["database"].values():
        subsets[entry["subset"]] = subsets.get(entry["subset"], 0) + 1
    print(f"wrote {args.out}: {len(data['database'])} videos {subsets}")


if __name__ == "__main__":
    main()
