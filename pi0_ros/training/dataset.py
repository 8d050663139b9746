"""Episodes for training: the ``EpisodeDataset`` interface, an in-memory dataset, the LeRobot-format
adapter, and the checks that report bad data before a single step runs.

The trainer needs, per episode: the state ``[T, S]`` and action ``[T, A]`` arrays (cheap, read once),
the task text, and the camera images of one frame on demand (decoded lazily). LeRobot feature names
are used throughout: ``observation.state``, ``action``, ``observation.images.<camera>``, ``task``.

``validate_dataset`` scans everything numeric (and the first frame of every camera of every episode)
and raises ``DatasetError`` listing every problem at once: missing keys or cameras, NaN/inf, empty
episodes, state/action lengths that disagree, dimensions that do not fit the checkpoint, prompts that
do not fit the model's token budget.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence

import numpy as np

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
TASK_KEY = "task"


class DatasetError(ValueError):
    """The dataset cannot be trained on; ``problems`` lists every finding."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.problems = list(problems)
        shown = self.problems[:40]
        more = f"\n  ... and {len(self.problems) - len(shown)} more" if len(self.problems) > len(shown) else ""
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the training data:\n  "
                         + "\n  ".join(shown) + more)


@dataclasses.dataclass
class EpisodeArrays:
    """The numeric part of one episode."""

    index: int
    states: np.ndarray  # float [T, S]
    actions: np.ndarray  # float [T, A]
    task: str

    @property
    def length(self) -> int:
        """Number of frames."""
        return int(self.actions.shape[0])


class EpisodeDataset(Protocol):
    """What the trainer reads. Episode ids are 0 .. ``num_episodes - 1`` (positions, not file indices)."""

    @property
    def num_episodes(self) -> int:
        """Number of episodes."""
        ...

    @property
    def camera_names(self) -> List[str]:
        """Cameras the dataset has images of."""
        ...

    def episode(self, i: int) -> EpisodeArrays:
        """State, actions and task of episode ``i``."""
        ...

    def images(self, i: int, frame: int) -> Dict[str, np.ndarray]:
        """uint8 RGB [H, W, 3] per camera at one frame."""
        ...


class InMemoryDataset:
    """Episodes held as arrays (tests, synthetic data, small collections)."""

    def __init__(self, episodes: Sequence[EpisodeArrays], images: Sequence[Dict[str, np.ndarray]],
                 camera_names: Optional[Sequence[str]] = None, name: str = "in-memory dataset"):
        """``images[i][camera]`` is uint8 [T, H, W, 3] for episode ``i``."""
        if len(episodes) != len(images):
            raise ValueError("one image dict per episode is needed")
        self._episodes = list(episodes)
        self._images = list(images)
        cams = camera_names if camera_names is not None else sorted({c for d in images for c in d})
        self._cameras = list(cams)
        self.name = name

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def camera_names(self) -> List[str]:
        return list(self._cameras)

    def episode(self, i: int) -> EpisodeArrays:
        return self._episodes[i]

    def images(self, i: int, frame: int) -> Dict[str, np.ndarray]:
        return {cam: frames[frame] for cam, frames in self._images[i].items()}


# ------------------------------------------------------------------------------------------ LeRobot
def _decode_image(value: object) -> np.ndarray:
    """One LeRobot image cell -> uint8 [H, W, 3]: {"bytes": PNG/JPEG, "path": ...}, raw bytes, or nested lists."""
    from io import BytesIO

    from PIL import Image

    if isinstance(value, dict):
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            with Image.open(value["path"]) as im:
                return np.asarray(im.convert("RGB"))
    if isinstance(value, (bytes, bytearray)):
        with Image.open(BytesIO(value)) as im:
            return np.asarray(im.convert("RGB"))
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:  # CHW -> HWC
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = np.clip(array * 255.0 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
    return array


class LeRobotDirectory:
    """A LeRobot v2.x dataset directory read with pyarrow (images stored in the parquet files).

    Layout: ``meta/info.json`` (``data_path`` template, ``chunks_size``, ``features``),
    ``meta/episodes.jsonl``, ``meta/tasks.jsonl`` and one parquet file per episode. Video-encoded
    cameras (``dtype: video``) are not decoded here: use ``pi0_ros.data``'s reader for those.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.name = str(self.root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(self.name, [f"no meta/info.json: not a LeRobot dataset directory ({info_path})"])
        self.info = _read_info(info_path, self.name)
        self.features: Dict[str, dict] = self.info.get("features", {})
        self.fps = self.info.get("fps")
        self._tasks = {}
        tasks_path = self.root / "meta" / "tasks.jsonl"
        if tasks_path.is_file():
            for line in tasks_path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self._tasks[int(row["task_index"])] = row["task"]
        episodes_path = self.root / "meta" / "episodes.jsonl"
        self._episode_rows = []
        if episodes_path.is_file():
            self._episode_rows = [json.loads(x) for x in episodes_path.read_text().splitlines() if x.strip()]
        else:
            self._episode_rows = [{"episode_index": i} for i in range(int(self.info.get("total_episodes", 0)))]
        self._cache: Dict[int, object] = {}

    @property
    def num_episodes(self) -> int:
        return len(self._episode_rows)

    @property
    def camera_names(self) -> List[str]:
        return [k[len(IMAGE_PREFIX):] for k in self.features if k.startswith(IMAGE_PREFIX)]

    def _path(self, i: int) -> Path:
        ep = int(self._episode_rows[i]["episode_index"])
        template = self.info.get("data_path", "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet")
        chunk = ep // int(self.info.get("chunks_size", 1000))
        return self.root / template.format(episode_chunk=chunk, episode_index=ep)

    def _table(self, i: int):
        if i not in self._cache:
            import pyarrow.parquet as pq

            if len(self._cache) > 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = pq.read_table(self._path(i))
        return self._cache[i]

    def episode(self, i: int) -> EpisodeArrays:
        table = self._table(i)
        missing = [k for k in (STATE_KEY, ACTION_KEY) if k not in table.column_names]
        if missing:
            raise KeyError(f"episode {i} ({self._path(i).name}) has no column(s) {missing}")
        states = np.asarray(table.column(STATE_KEY).to_pylist(), dtype=np.float64)
        actions = np.asarray(table.column(ACTION_KEY).to_pylist(), dtype=np.float64)
        if TASK_KEY in table.column_names and table.num_rows:
            task = str(table.column(TASK_KEY)[0].as_py())
        elif "task_index" in table.column_names and table.num_rows:
            task = self._tasks.get(int(table.column("task_index")[0].as_py()), "")
        else:
            tasks = self._episode_rows[i].get("tasks") or [""]
            task = str(tasks[0])
        if states.ndim == 1:
            states = states.reshape(len(states), -1)
        if actions.ndim == 1:
            actions = actions.reshape(len(actions), -1)
        return EpisodeArrays(i, states, actions, task)

    def images(self, i: int, frame: int) -> Dict[str, np.ndarray]:
        table = self._table(i)
        out = {}
        for cam in self.camera_names:
            key = IMAGE_PREFIX + cam
            if key in table.column_names:
                out[cam] = _decode_image(table.column(key)[frame].as_py())
        return out


class TeamDataset:
    """``pi0_ros.data``'s LeRobot v3.0 reader behind ``EpisodeDataset`` (images kept encoded, decoded per
    frame when a sample needs them)."""

    def __init__(self, root: str | os.PathLike):
        from pi0_ros.data.lerobot_dataset import DatasetError as ReaderError
        from pi0_ros.data.lerobot_dataset import DatasetReader

        self.name = str(root)
        try:
            self.reader = DatasetReader(root)
        except ReaderError as err:  # damaged metadata: reported like other unusable data (pi0-train exits 2)
            raise DatasetError(self.name, [str(err)]) from err
        self.action_space = self.reader.spec.action_space
        self.fps = self.reader.spec.fps
        self._cams = [k[len(IMAGE_PREFIX):] for k in self.reader.spec.camera_keys]
        self._blobs: Dict[int, Dict[str, list]] = {}
        self._decoded: Dict[int, Dict[str, np.ndarray]] = {}

    @property
    def num_episodes(self) -> int:
        return len(self.reader.episodes)

    @property
    def camera_names(self) -> List[str]:
        return list(self._cams)

    def episode(self, i: int) -> EpisodeArrays:
        from pi0_ros.data.lerobot_dataset import DatasetError as ReaderError

        try:
            raw = self.reader.episode(i, decode_images=False)
        except ReaderError as err:
            raise ValueError(str(err)) from err
        self._blobs[i] = {c: raw[IMAGE_PREFIX + c] for c in self._cams if IMAGE_PREFIX + c in raw}
        return EpisodeArrays(i, np.asarray(raw[STATE_KEY], dtype=np.float64),
                             np.asarray(raw[ACTION_KEY], dtype=np.float64), str(raw.get(TASK_KEY, "")))

    def images(self, i: int, frame: int) -> Dict[str, np.ndarray]:
        if i in self._decoded:
            return {c: frames[frame] for c, frames in self._decoded[i].items()}
        if i not in self._blobs:
            self.episode(i)
        return {c: self._decode(i, frame, c, blobs[frame]) for c, blobs in self._blobs[i].items()}

    def _decode(self, i: int, frame: int, camera: str, blob: bytes) -> np.ndarray:
        """One stored image; a damaged one is a DatasetError naming where it is (the writer samples frames)."""
        from pi0_ros.data.lerobot_dataset import DatasetError as ReaderError
        from pi0_ros.data.lerobot_dataset import decode_image_bytes

        try:
            return decode_image_bytes(blob)
        except ReaderError as err:
            raise DatasetError(self.name, [f"episode {i}, frame {frame}, camera {camera!r}: {err}"]) from err

    def preload_images(self, progress: bool = False, episodes: Optional[int] = None) -> int:
        """Decode every frame of every camera (of the first ``episodes``, default all) once and keep the pixels
        (uint8) in memory; returns the bytes held.

        Decoding three JPEGs per sample, epoch after epoch, is what bounds training throughput on small models;
        loader workers started after this share the arrays (fork, copy-on-write) instead of decoding again."""
        from tqdm import tqdm

        held = 0
        count = self.num_episodes if episodes is None else min(episodes, self.num_episodes)
        for i in tqdm(range(count), desc="decoding images", unit="episode", disable=not progress):
            if i not in self._blobs:
                self.episode(i)
            self._decoded[i] = {c: np.stack([self._decode(i, t, c, b) for t, b in enumerate(blobs)])
                                for c, blobs in self._blobs[i].items()}
            held += sum(a.nbytes for a in self._decoded[i].values())
        return held


def open_dataset(path: str | os.PathLike) -> EpisodeDataset:
    """A LeRobot-format dataset directory: v3.0 (``pi0_ros.data``'s writer) through the team's reader,
    v2.x through the pyarrow reader above."""
    info_path = Path(path) / "meta" / "info.json"
    if info_path.is_file() and str(_read_info(info_path, str(path)).get("codebase_version", "")).startswith("v3"):
        return TeamDataset(path)
    return LeRobotDirectory(path)


def _read_info(info_path: Path, name: str) -> dict:
    """meta/info.json; a damaged one is a DatasetError naming the file, not a bare JSONDecodeError."""
    from pi0_ros.data.lerobot_dataset import DatasetError as ReaderError
    from pi0_ros.data.lerobot_dataset import read_metadata_json

    try:
        return read_metadata_json(info_path)
    except ReaderError as err:
        raise DatasetError(name, [str(err)]) from err


# ------------------------------------------------------------------------------------- validation
@dataclasses.dataclass
class Expectations:
    """What the model/checkpoint needs from the data."""

    state_dim: Optional[int] = None  # None: taken from the data
    action_dim: Optional[int] = None
    model_width: Optional[int] = None  # padded state/action width of the model
    cameras: Sequence[str] = ()  # camera names the policy config uses (must exist in the data)
    prompt_check: Optional[Callable[[str], None]] = None  # raises when a task does not fit the model
    min_length: int = 1


def validate_dataset(dataset: EpisodeDataset, expect: Expectations, source: str = "dataset") -> Dict[str, int]:
    """Scan every episode; raise DatasetError listing all problems, else return the dims found."""
    problems: List[str] = []
    if dataset.num_episodes == 0:
        raise DatasetError(source, ["the dataset has no episodes"])
    missing_cams = [c for c in expect.cameras if c and c not in dataset.camera_names]
    if missing_cams:
        problems.append(f"camera(s) {missing_cams} are not in the dataset (it has {dataset.camera_names}; "
                        f"keys {[IMAGE_PREFIX + c for c in missing_cams]})")
    state_dims, action_dims, checked_prompts = set(), set(), set()
    for i in range(dataset.num_episodes):
        where = f"episode {i}"
        try:
            ep = dataset.episode(i)
        except (KeyError, ValueError, OSError) as err:
            problems.append(f"{where}: cannot be read: {err}")
            continue
        if ep.length < expect.min_length or ep.states.shape[0] == 0:
            problems.append(f"{where}: empty (0 frames)")
            continue
        if ep.states.ndim != 2 or ep.actions.ndim != 2:
            problems.append(f"{where}: '{STATE_KEY}'/'{ACTION_KEY}' must be [T, dim], got "
                            f"{ep.states.shape} / {ep.actions.shape}")
            continue
        if ep.states.shape[0] != ep.actions.shape[0]:
            problems.append(f"{where}: {ep.states.shape[0]} states but {ep.actions.shape[0]} actions")
        state_dims.add(ep.states.shape[1])
        action_dims.add(ep.actions.shape[1])
        for key, arr in ((STATE_KEY, ep.states), (ACTION_KEY, ep.actions)):
            bad = ~np.isfinite(arr)
            if bad.any():
                frames, dims = np.nonzero(bad)
                problems.append(f"{where}: {int(bad.sum())} NaN/inf value(s) in '{key}' "
                                f"(first at frame {int(frames[0])}, dim {int(dims[0])})")
        if not isinstance(ep.task, str) or not ep.task.strip():
            problems.append(f"{where}: no '{TASK_KEY}' text")
        elif expect.prompt_check is not None and ep.task not in checked_prompts:
            checked_prompts.add(ep.task)
            try:
                expect.prompt_check(ep.task)
            except ValueError as err:
                problems.append(f"{where}: task {ep.task!r} does not fit the model: {err}")
        if expect.cameras:
            try:
                first = dataset.images(i, 0)
            except (KeyError, ValueError, OSError, IndexError) as err:
                problems.append(f"{where}: images cannot be read: {err}")
            else:
                for cam in expect.cameras:
                    if cam and cam in dataset.camera_names and cam not in first:
                        problems.append(f"{where}: no '{IMAGE_PREFIX}{cam}' image")
                    elif cam in first:
                        img = first[cam]
                        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                            problems.append(f"{where}: '{IMAGE_PREFIX}{cam}' is not uint8 [H, W, 3] "
                                            f"({img.dtype} {img.shape})")
    for name, dims, want in (("state", state_dims, expect.state_dim), ("action", action_dims, expect.action_dim)):
        if len(dims) > 1:
            problems.append(f"episodes disagree on the {name} dimension: {sorted(dims)}")
        elif dims and want is not None and dims != {want}:
            problems.append(f"{name} dimension is {dims.pop()} in the data but {want} in the checkpoint/config")
        elif dims and expect.model_width is not None and max(dims) > expect.model_width:
            problems.append(f"{name} dimension {max(dims)} exceeds the model width {expect.model_width}")
    if problems:
        raise DatasetError(source, problems)
    return {"state_dim": state_dims.pop(), "action_dim": action_dims.pop()}
