"""A copy of a LeRobot dataset with every image re-encoded as JPEG of a given quality (smaller files).

Why: moving a dataset to a training machine can have a size limit (this project's GPU machine takes 64 MiB
per call); the simulator's 224 px camera JPEGs at quality 90 weigh ~5 KB each, at quality 60 about 40 %
less. Everything but the image bytes is copied as is (metadata, statistics, vectors); image statistics in
meta/ were computed on the original pixels and stay a close description of the re-encoded ones.

    python -m pi0_ros.data.reencode SRC DST --quality 60
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pi0_ros.data.lerobot_dataset import IMAGE_TYPE, atomic_write_table, decode_image_bytes
from pi0_ros.image_conversion import encode_compressed


def reencode_table(table: pa.Table, quality: int) -> pa.Table:
    """``table`` with every image column's bytes decoded and written again as JPEG of ``quality``."""
    for index, field in enumerate(table.schema):
        if field.type != IMAGE_TYPE:
            continue
        rows = []
        for value in table.column(index).to_pylist():
            if value is None or value.get("bytes") is None:
                rows.append(value)
                continue
            rgb = decode_image_bytes(value["bytes"])
            rows.append({"bytes": encode_compressed(np.ascontiguousarray(rgb), "jpeg", quality),
                         "path": value.get("path")})
        table = table.set_column(index, field, pa.array(rows, type=IMAGE_TYPE))
    return table


def reencode_dataset(src: Path | str, dst: Path | str, quality: int) -> Tuple[int, int]:
    """Copy the dataset at ``src`` to ``dst`` (which must not exist) with JPEG images of ``quality``.
    Returns the bytes of the frame files before and after."""
    src, dst = Path(src), Path(dst)
    if not (src / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{src}: no meta/info.json (not a LeRobot dataset)")
    if dst.exists():
        raise FileExistsError(f"{dst} exists")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.parquet"))
    shutil.copytree(src / "meta", dst / "meta", dirs_exist_ok=True)  # meta's parquet files as they are
    before = after = 0
    for path in sorted((src / "data").rglob("*.parquet")):
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_table(out, reencode_table(pq.read_table(path), quality))
        before += path.stat().st_size
        after += out.stat().st_size
    return before, after


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m pi0_ros.data.reencode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--quality", type=int, default=60)
    args = p.parse_args(argv)
    try:
        before, after = reencode_dataset(args.src, args.dst, args.quality)
    except (OSError, ValueError) as err:
        print(f"reencode: {err}", file=sys.stderr)
        return 2
    print(f"{args.dst}: frame files {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (JPEG quality {args.quality})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
