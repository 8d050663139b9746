"""A copy of a LeRobot dataset with every image re-encoded as JPEG of a given quality (smaller files), or
of its first N episodes.

Why: moving a dataset to a training machine can have a size limit (this project's GPU machine takes 64 MiB
per call); the simulator's 224 px camera JPEGs at quality 90 weigh ~5 KB each, at quality 60 about 40 %
less. Everything but the image bytes is copied as is (metadata, statistics, vectors); image statistics in
meta/ were computed on the original pixels and stay a close description of the re-encoded ones. A copy of
the first N episodes gets its own info.json and stats.json (the writer's repair recomputes them).

    python -m pi0_ros.data.reencode SRC DST --quality 60 [--episodes N]   (--quality 0: bytes kept)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pi0_ros.data.lerobot_dataset import (
    DATA_PATH,
    IMAGE_TYPE,
    INFO_PATH,
    TASKS_PATH,
    EpisodeRecord,
    _committed_episodes,
    atomic_write_table,
    chunk_file,
    decode_image_bytes,
    repair,
    spec_from_info,
)
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


def _copy(src: Path, dst: Path, committed: Sequence[Tuple[Path, EpisodeRecord, object]],
          quality: Optional[int]) -> Tuple[int, int]:
    """Copy into the existing, empty ``dst``; returns the frame files' bytes before and after."""
    # Everything but the per-episode files; then each kept episode's metadata row and frame file.
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.parquet"), dirs_exist_ok=True)
    shutil.copy2(src / TASKS_PATH, dst / TASKS_PATH)
    before = after = 0
    for meta_path, record, _ in committed:
        shutil.copy2(meta_path, dst / meta_path.relative_to(src))
        frames = DATA_PATH.format(**chunk_file(record.episode_index))
        out = dst / frames
        out.parent.mkdir(parents=True, exist_ok=True)
        if quality is None:
            shutil.copy2(src / frames, out)
        else:
            atomic_write_table(out, reencode_table(pq.read_table(src / frames), quality))
        before += (src / frames).stat().st_size
        after += out.stat().st_size
    return before, after


def reencode_dataset(src: Path | str, dst: Path | str, quality: Optional[int],
                     episodes: Optional[int] = None) -> Tuple[int, int]:
    """Copy the dataset at ``src`` to ``dst`` (which must not exist) with JPEG images of ``quality`` (None:
    the image bytes as they are) and only its first ``episodes`` episodes (None: all). Returns the bytes of
    the frame files copied, before and after."""
    src, dst = Path(src), Path(dst)
    if not (src / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{src}: no meta/info.json (not a LeRobot dataset)")
    if dst.exists():
        raise FileExistsError(f"{dst} exists")
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    if episodes is not None and episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    committed = _committed_episodes(src)[:episodes]
    # Written into a sibling temporary directory and renamed when complete: an interrupted run leaves no DST
    # whose info.json describes episodes it lacks, and a rerun is not refused by a half copy.
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        before, after = _copy(src, partial, committed, quality)
        if episodes is not None:  # info.json and stats.json for the episodes kept
            repair(partial, spec_from_info(json.loads((partial / INFO_PATH).read_text())))
        os.rename(partial, dst)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return before, after


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m pi0_ros.data.reencode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--quality", type=int, default=60, help="JPEG quality; 0 keeps the image bytes as they are")
    p.add_argument("--episodes", type=int, default=None, help="copy only the first N episodes")
    args = p.parse_args(argv)
    try:
        before, after = reencode_dataset(args.src, args.dst, args.quality or None, args.episodes)
    except (OSError, ValueError) as err:
        print(f"reencode: {err}", file=sys.stderr)
        return 2
    quality = args.quality or "kept"
    print(f"{args.dst}: frame files {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (JPEG quality {quality})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
