"""rosbag2 recordings (sqlite3 or MCAP) -> the same LeRobot dataset the recorder writes.

Each bag becomes one episode. Messages are replayed in log-time order into the recorder's own
:class:`~pi0_ros.data.frames.FrameAssembler` (same topics from the embodiment, same name matching, same
state and inverse action mapping, same staleness rules with log time as arrival time), and a frame is
taken every ``1 / fps`` seconds of log time. Reading uses the pure-Python ``rosbags`` library, which
needs no ROS installation and takes the message definitions from the bag.

    pi0-import-bag run1/ run2/ --root ~/pi0_ros_data/imported --task "touch the red cube with the left hand"
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from pi0_ros.cli_types import positive_int
from pi0_ros.data.features import make_spec
from pi0_ros.data.frames import IMAGE_STORAGES, Frame, FrameAssembler, FrameLimits
from pi0_ros.data.lerobot_dataset import DatasetWriter, EpisodeRecord
from pi0_ros.embodiment import Embodiment, load_embodiment

INSTRUCTION_TOPICS = ("/instruction", "instruction")


@dataclass
class BagImportResult:
    """What one bag produced."""

    bag: str
    episode: Optional[EpisodeRecord]
    frames: int
    skipped: Dict[str, int] = field(default_factory=dict)
    task: str = ""


def _topic_routes(embodiment: Embodiment, assembler: FrameAssembler) -> Dict[str, Tuple[str, str]]:
    routes: Dict[str, Tuple[str, str]] = {}
    for group in assembler.state_groups:
        routes[embodiment.groups[group].feedback_topic] = ("feedback", group)
    for group in assembler.command_groups:
        routes[embodiment.groups[group].command_topic] = ("command", group)
    for camera in assembler.image_sizes:
        routes[embodiment.cameras[camera].topic] = ("image", camera)
    for topic in INSTRUCTION_TOPICS:
        routes[topic] = ("instruction", "")
    return routes


def import_bag(bag: Path | str, writer: DatasetWriter, embodiment: Embodiment, task: Optional[str] = None,
               limits: Optional[FrameLimits] = None, image_storage: str = "keep") -> BagImportResult:
    """Append one bag to ``writer`` as one episode; ``task`` defaults to the bag's last instruction."""
    from rosbags.highlevel import AnyReader

    spec = writer.spec
    sizes = {key[len("observation.images."):]: tuple(f["shape"][:2])
             for key, f in spec.features.items() if f["dtype"] == "image"}
    assembler = FrameAssembler(embodiment, spec.action_space, sizes, limits, image_storage)
    routes = _topic_routes(embodiment, assembler)
    period = 1.0 / spec.fps
    frames: List[Frame] = []
    instruction = ""
    with AnyReader([Path(bag)]) as reader:
        connections = [c for c in reader.connections if c.topic in routes]
        wanted = {routes[c.topic][0] for c in connections}
        missing = {"feedback", "command"} - wanted
        if missing:
            raise ValueError(f"{bag}: no {' or '.join(sorted(missing))} topics of the embodiment in the bag; "
                             f"it has {sorted({c.topic for c in reader.connections})}")
        next_frame: Optional[float] = None
        for connection, timestamp_ns, raw in reader.messages(connections=connections):
            now = timestamp_ns * 1e-9
            if next_frame is None:
                next_frame = now + period
            while now >= next_frame:
                result = assembler.assemble(next_frame)
                if isinstance(result, Frame):
                    frames.append(result)
                next_frame += period
            kind, name = routes[connection.topic]
            msg = reader.deserialize(raw, connection.msgtype)
            if kind == "feedback":
                assembler.on_feedback(name, list(msg.name), list(msg.position), now)
            elif kind == "command":
                assembler.on_command(name, list(msg.name), list(msg.position), now)
            elif kind == "image":
                assembler.on_image(name, msg, now)
            else:
                instruction = msg.data
    task = task or instruction
    result = BagImportResult(bag=str(bag), episode=None, frames=len(frames), skipped=dict(assembler.skipped),
                             task=task)
    if not frames:
        return result
    if not task:
        raise ValueError(f"{bag}: no task given and no instruction message in the bag")
    writer.start_episode(task)
    try:
        for frame in frames:
            writer.add_frame(frame.state, frame.action, frame.images)
    except Exception:
        writer.discard_episode()
        raise
    result.episode = writer.finish_episode()
    return result


def import_bags(bags: Sequence[Path | str], root: Path | str, task: Optional[str] = None,
                action_space: str = "joint_position", fps: int = 15,
                image_sizes: Optional[Mapping[str, Tuple[int, int]]] = None, embodiment: Optional[Embodiment] = None,
                limits: Optional[FrameLimits] = None, image_storage: str = "keep") -> List[BagImportResult]:
    """Import several bags into the dataset at ``root`` (created, or appended to)."""
    embodiment = embodiment or load_embodiment()
    writer = DatasetWriter(root, make_spec(embodiment, action_space, fps, image_sizes))
    try:
        return [import_bag(bag, writer, embodiment, task, limits, image_storage) for bag in bags]
    finally:
        writer.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``pi0-import-bag``."""
    parser = argparse.ArgumentParser(prog="pi0-import-bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("bags", nargs="+", help="rosbag2 directories (sqlite3 or MCAP) or MCAP files")
    parser.add_argument("--root", required=True, help="dataset directory (created, or appended to)")
    parser.add_argument("--task", default=None, help="language instruction (default: the bag's 'instruction')")
    parser.add_argument("--action-space", default="joint_position")
    parser.add_argument("--fps", type=positive_int, default=15)
    parser.add_argument("--embodiment", default=None, help="embodiment YAML (default: the package's r1pro.yaml)")
    parser.add_argument("--cameras", nargs="*", default=None, help="cameras to import (default: all)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=None,
                        help="stored image size (default: each camera's size in the embodiment)")
    parser.add_argument("--image-storage", choices=IMAGE_STORAGES, default="keep")
    parser.add_argument("--state-timeout-s", type=float, default=0.2)
    parser.add_argument("--command-timeout-s", type=float, default=0.2)
    args = parser.parse_args(argv)
    embodiment = load_embodiment(args.embodiment)
    cameras = args.cameras if args.cameras is not None else list(embodiment.cameras)
    unknown = sorted(set(cameras) - set(embodiment.cameras))
    if unknown:
        parser.error(f"--cameras: unknown cameras {unknown}; the embodiment has {sorted(embodiment.cameras)}")
    sizes = {c: tuple(args.image_size) if args.image_size else (embodiment.cameras[c].height,
                                                                 embodiment.cameras[c].width) for c in cameras}
    limits = FrameLimits(args.state_timeout_s, args.command_timeout_s)
    results = import_bags(args.bags, args.root, args.task, args.action_space, args.fps, sizes, embodiment, limits,
                          args.image_storage)
    for r in results:
        where = f"episode {r.episode.episode_index}" if r.episode else "nothing (no complete frame)"
        print(f"{r.bag}: {where}, {r.frames} frames, skipped {r.skipped or 0}, task {r.task!r}")
    return 0 if all(r.episode for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
