"""LeRobot v3.0 datasets on disk: a crash-safe episode writer and a reader (no LeRobot import).

Layout (LeRobot ``codebase_version`` v3.0; one data file and one episode-metadata file per episode)::

    meta/info.json                                    features, fps, totals, path templates
    meta/stats.json                                   per-feature min/max/mean/std/count/q01..q99
    meta/tasks.parquet                                task (index) -> task_index
    meta/episodes/chunk-CCC/file-FFF.parquet          one row per episode: length, tasks, row range,
                                                      data file, per-episode stats/<feature>/<stat>
    data/chunk-CCC/file-FFF.parquet                   frames: observation.state, action,
                                                      observation.images.<camera> ({bytes, path}),
                                                      timestamp, frame_index, episode_index, index,
                                                      task_index

Crash safety. Frames of the episode being recorded stream into ``.recording/`` (row groups, so a long
episode does not live in memory) and nothing under ``data/`` or ``meta/`` names them. Finishing an
episode renames its data file into ``data/`` (atomic), then updates ``tasks.parquet``, then writes the
episode's metadata file (the commit point), then ``stats.json`` and ``info.json``: every file is
written to a temporary name, fsynced and renamed. Opening a dataset for writing repairs what a crash
can leave: it deletes ``.recording/`` and temporary files, deletes data files that no committed
episode references, and rewrites ``info.json`` / ``stats.json`` from the committed episodes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pi0_ros.data import stats as stats_lib
from pi0_ros.data.features import ACTION_KEY, STATE_KEY, DatasetSpec

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's default)
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
RECORDING_DIR = ".recording"
TMP_SUFFIX = ".tmp"
ROWS_PER_GROUP = 16  # frames buffered before a row group goes to disk
IMAGE_STATS_STRIDE = 5  # every n-th frame's pixels feed the image statistics


class DatasetError(RuntimeError):
    """The dataset on disk cannot be used as asked."""


@dataclass(frozen=True)
class EncodedImage:
    """A camera frame as stored: PNG or JPEG bytes, plus its pixels when the caller has them."""

    data: bytes
    rgb: Optional[np.ndarray] = None  # [H, W, 3] uint8; decoded from ``data`` when needed


@dataclass(frozen=True)
class EpisodeRecord:
    """One committed episode."""

    episode_index: int
    length: int
    tasks: Tuple[str, ...]
    from_index: int
    to_index: int


@dataclass
class RecoveryReport:
    """What opening a dataset found and repaired."""

    dropped_partial: List[str] = field(default_factory=list)  # incomplete episodes' spool files
    removed_files: List[str] = field(default_factory=list)  # temporary or unreferenced files
    rewrote_meta: bool = False

    @property
    def clean(self) -> bool:
        """True when nothing had to be repaired."""
        return not (self.dropped_partial or self.removed_files or self.rewrote_meta)


def chunk_file(index: int) -> Dict[str, int]:
    """Chunk and file index of the n-th file (one file per episode)."""
    return {"chunk_index": index // CHUNKS_SIZE, "file_index": index % CHUNKS_SIZE}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_table(path: Path, table: pa.Table) -> None:
    """Parquet version of :func:`atomic_write_bytes`."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- schemas -----------------------------------------------------------------------------------

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def data_schema(spec: DatasetSpec) -> pa.Schema:
    """Arrow schema of the frame files (vectors as fixed-size lists, images as {bytes, path})."""
    fields = []
    for key, feature in spec.features.items():
        if feature["dtype"] == "image":
            fields.append(pa.field(key, IMAGE_TYPE))
        elif feature["shape"] == [1]:
            fields.append(pa.field(key, pa.float32() if feature["dtype"] == "float32" else pa.int64()))
        else:
            fields.append(pa.field(key, pa.list_(pa.float32(), feature["shape"][0])))
    return pa.schema(fields)


def tasks_table(tasks: Sequence[str]) -> pa.Table:
    """``tasks.parquet``: a pandas frame indexed by task with a ``task_index`` column (LeRobot reads it
    with ``pandas.read_parquet``; the pandas metadata makes ``task`` the index)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "task": pa.array(list(tasks), pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def read_tasks(root: Path) -> List[str]:
    """Tasks in ``task_index`` order."""
    path = root / TASKS_PATH
    if not path.exists():
        return []
    table = pq.read_table(path)
    names = "task" if "task" in table.column_names else "__index_level_0__"
    pairs = sorted(zip(table.column("task_index").to_pylist(), table.column(names).to_pylist(), strict=True))
    return [task for _, task in pairs]


# -- info / episodes ---------------------------------------------------------------------------

def build_info(spec: DatasetSpec, total_episodes: int, total_frames: int, total_tasks: int) -> dict:
    """``info.json`` contents; ``pi0_ros`` records which action space the ``action`` column holds."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": spec.robot_type,
        "total_episodes": total_episodes,
        "total_frames": total_frames,
        "total_tasks": total_tasks,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": spec.fps,
        "splits": {"train": f"0:{total_episodes}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": None,
        "features": spec.features,
        "pi0_ros": {"action_space": spec.action_space},
    }


def spec_from_info(info: dict) -> DatasetSpec:
    """The spec an existing dataset was written with."""
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise DatasetError(f"dataset is {info.get('codebase_version')!r}; this reader handles {CODEBASE_VERSION}")
    features = {k: {**v, "shape": list(v["shape"])} for k, v in info["features"].items()}
    return DatasetSpec(fps=int(info["fps"]), robot_type=info.get("robot_type") or "",
                       action_space=info.get("pi0_ros", {}).get("action_space", ""), features=features)


def _episode_row(record: EpisodeRecord, feature_stats: Mapping[str, Mapping[str, np.ndarray]]) -> pa.Table:
    where = chunk_file(record.episode_index)
    row = {
        "episode_index": pa.array([record.episode_index], pa.int64()),
        "tasks": pa.array([list(record.tasks)], pa.list_(pa.string())),
        "length": pa.array([record.length], pa.int64()),
        "data/chunk_index": pa.array([where["chunk_index"]], pa.int64()),
        "data/file_index": pa.array([where["file_index"]], pa.int64()),
        "dataset_from_index": pa.array([record.from_index], pa.int64()),
        "dataset_to_index": pa.array([record.to_index], pa.int64()),
        "meta/episodes/chunk_index": pa.array([where["chunk_index"]], pa.int64()),
        "meta/episodes/file_index": pa.array([where["file_index"]], pa.int64()),
    }
    for feature, values in feature_stats.items():
        for stat, value in values.items():
            arr = np.asarray(value)
            dtype = pa.int64() if stat == "count" else pa.float64()
            for _ in range(arr.ndim - 1):
                dtype = pa.list_(dtype)
            row[f"stats/{feature}/{stat}"] = pa.array([arr.tolist()], pa.list_(dtype))
    return pa.table(row)


def read_metadata_json(path: Path) -> dict:
    """A metadata JSON file; a damaged one (e.g. truncated by a full disk) is a DatasetError naming it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: damaged JSON ({err})") from err


def _read_episode_row(path: Path) -> Tuple[EpisodeRecord, Dict[str, Dict[str, np.ndarray]]]:
    try:
        rows = pq.read_table(path).to_pylist()
        if len(rows) > 1:
            # LeRobot's own writer packs many episodes into one metadata (and data) file; taking the first row
            # would read all of them as one episode, chunks crossing episode boundaries.
            raise DatasetError(f"{path}: {len(rows)} episodes in one metadata file (LeRobot's packed v3.0 layout); "
                               "this reader takes one episode per file, as pi0_ros's writer stores them")
        row = rows[0]
        record = EpisodeRecord(episode_index=row["episode_index"], length=row["length"], tasks=tuple(row["tasks"]),
                               from_index=row["dataset_from_index"], to_index=row["dataset_to_index"])
    except (pa.ArrowException, IndexError, KeyError) as err:
        raise DatasetError(f"{path}: damaged episode metadata ({type(err).__name__}: {err})") from err
    feature_stats: Dict[str, Dict[str, np.ndarray]] = {}
    for key, value in row.items():
        if key.startswith("stats/"):
            feature, stat = key[len("stats/"):].rsplit("/", 1)
            feature_stats.setdefault(feature, {})[stat] = np.asarray(value)
    return record, feature_stats


def _committed_episodes(root: Path) -> List[Tuple[Path, EpisodeRecord, Dict[str, Dict[str, np.ndarray]]]]:
    found = []
    for path in sorted((root / "meta" / "episodes").glob("*/*.parquet")):
        record, feature_stats = _read_episode_row(path)
        found.append((path, record, feature_stats))
    found.sort(key=lambda item: item[1].episode_index)
    return found


# -- writer ------------------------------------------------------------------------------------

class _EpisodeSpool:
    """The episode being recorded: rows stream into ``.recording/episode-NNNNNN.parquet``."""

    def __init__(self, path: Path, schema: pa.Schema, episode_index: int, first_index: int, task: str,
                 task_index: int):
        self.path = path
        self.task = task
        self.schema = schema
        self.episode_index = episode_index
        self.first_index = first_index
        self.task_index = task_index
        self.length = 0
        self.rows: List[dict] = []
        self.vectors: Dict[str, List[np.ndarray]] = {}
        self.image_samples: Dict[str, List[np.ndarray]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(str(path), schema)

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        with open(self.path, "rb+") as f:
            os.fsync(f.fileno())


class DatasetWriter:
    """Appends episodes to a LeRobot v3.0 dataset at ``root`` (created when missing).

    Opening an existing dataset repairs what an interrupted writer left (see the module docstring);
    the report is in :attr:`recovery`. The ``spec`` must match an existing dataset's features.
    """

    def __init__(self, root: Path | str, spec: DatasetSpec):
        self.root = Path(root)
        self.spec = spec
        self.schema = data_schema(spec)
        self._camera_keys = spec.camera_keys
        self._vector_keys = [STATE_KEY, ACTION_KEY]
        self._spool: Optional[_EpisodeSpool] = None
        self.recovery = RecoveryReport()
        if (self.root / INFO_PATH).exists():
            existing = spec_from_info(json.loads((self.root / INFO_PATH).read_text()))
            if existing.features != spec.features or existing.fps != spec.fps:
                raise DatasetError(f"{self.root} holds a dataset with other features or fps; record into a new root")
        self.recovery = repair(self.root, spec)
        self.tasks = read_tasks(self.root)
        committed = _committed_episodes(self.root)
        self.episodes: List[EpisodeRecord] = [record for _, record, _ in committed]
        self._episode_stats = [feature_stats for _, _, feature_stats in committed]
        self._vectors = _load_vectors(self.root, self.episodes, self._vector_keys)

    # -- episodes --------------------------------------------------------------------------------

    @property
    def total_frames(self) -> int:
        """Frames in committed episodes."""
        return self.episodes[-1].to_index if self.episodes else 0

    @property
    def recording(self) -> bool:
        """True between :meth:`start_episode` and :meth:`finish_episode` / :meth:`discard_episode`."""
        return self._spool is not None

    @property
    def frames_in_episode(self) -> int:
        """Frames added to the current episode."""
        return self._spool.length if self._spool is not None else 0

    def start_episode(self, task: str) -> int:
        """Begin an episode with a language ``task``; returns its episode index."""
        if self._spool is not None:
            raise DatasetError("an episode is already being recorded; finish or discard it first")
        if not task:
            raise ValueError("an episode needs a task (the language instruction)")
        episode_index = len(self.episodes)
        task_index = self.tasks.index(task) if task in self.tasks else len(self.tasks)
        self._spool = _EpisodeSpool(self.root / RECORDING_DIR / f"episode-{episode_index:06d}.parquet",
                                    self.schema, episode_index, self.total_frames, task, task_index)
        return episode_index

    def add_frame(self, state: np.ndarray, action: np.ndarray, images: Mapping[str, EncodedImage]) -> int:
        """Append one frame (images keyed by feature key); returns its frame index."""
        spool = self._require_spool()
        row = {}
        for key, value in ((STATE_KEY, state), (ACTION_KEY, action)):
            arr = np.asarray(value, dtype=np.float32).reshape(-1)
            expected = self.spec.features[key]["shape"][0]
            if arr.size != expected or not np.all(np.isfinite(arr)):
                raise ValueError(f"{key}: need {expected} finite values, got {arr.tolist()}")
            row[key] = arr.tolist()
            spool.vectors.setdefault(key, []).append(arr)
        missing = sorted(set(self._camera_keys) - set(images))
        if missing:
            raise ValueError(f"frame lacks images {missing}")
        for key in self._camera_keys:
            image = images[key]
            row[key] = {"bytes": bytes(image.data), "path": None}
            if spool.length % IMAGE_STATS_STRIDE == 0:
                spool.image_samples.setdefault(key, []).append(_stats_pixels(image))
        frame_index = spool.length
        row.update(timestamp=frame_index / self.spec.fps, frame_index=frame_index, episode_index=spool.episode_index,
                   index=spool.first_index + frame_index, task_index=spool.task_index)
        spool.rows.append(row)
        spool.length += 1
        if len(spool.rows) >= ROWS_PER_GROUP:
            spool.flush()
        return frame_index

    def discard_episode(self) -> None:
        """Drop the episode being recorded (nothing of it stays on disk)."""
        spool = self._require_spool()
        self._spool = None
        spool.writer.close()
        spool.path.unlink(missing_ok=True)

    def finish_episode(self) -> EpisodeRecord:
        """Commit the episode being recorded (see the module docstring for the order of writes)."""
        spool = self._require_spool()
        if spool.length == 0:
            self.discard_episode()
            raise DatasetError("an episode needs at least one frame; the empty episode was discarded")
        spool.close()
        self._spool = None
        record = EpisodeRecord(episode_index=spool.episode_index, length=spool.length, tasks=(spool.task,),
                               from_index=spool.first_index, to_index=spool.first_index + spool.length)
        feature_stats = {key: stats_lib.vector_stats(np.stack(spool.vectors[key])) for key in self._vector_keys}
        for key in self._camera_keys:
            feature_stats[key] = stats_lib.image_stats(spool.image_samples[key])
        for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            feature_stats[key] = stats_lib.vector_stats(_index_column(key, record, spool.task_index, self.spec.fps))

        data_path = self.root / DATA_PATH.format(**chunk_file(record.episode_index))
        data_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(spool.path, data_path)
        _fsync_dir(data_path.parent)
        if spool.task not in self.tasks:
            atomic_write_table(self.root / TASKS_PATH, tasks_table(self.tasks + [spool.task]))
            self.tasks.append(spool.task)
        atomic_write_table(self.root / EPISODES_PATH.format(**chunk_file(record.episode_index)),
                           _episode_row(record, feature_stats))
        self.episodes.append(record)
        self._episode_stats.append(feature_stats)
        for key in self._vector_keys:
            self._vectors[key].append(np.stack(spool.vectors[key]))
        self._write_summary()
        return record

    def close(self) -> None:
        """Discard an unfinished episode (a recorder that stops mid-episode keeps nothing of it)."""
        if self._spool is not None:
            self.discard_episode()

    def _require_spool(self) -> _EpisodeSpool:
        if self._spool is None:
            raise DatasetError("no episode is being recorded; call start_episode first")
        return self._spool

    def _write_summary(self) -> None:
        write_summary(self.root, self.spec, self.episodes, self._episode_stats, self._vectors, len(self.tasks))


def _index_column(key: str, record: EpisodeRecord, task_index: int, fps: int) -> np.ndarray:
    frames = np.arange(record.length)
    values = {"timestamp": frames / fps, "frame_index": frames,
              "episode_index": np.full(record.length, record.episode_index),
              "index": record.from_index + frames, "task_index": np.full(record.length, task_index)}[key]
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


def _stats_pixels(image: EncodedImage) -> np.ndarray:
    rgb = image.rgb if image.rgb is not None else decode_image_bytes(image.data)
    step = max(1, max(rgb.shape[:2]) // stats_lib.IMAGE_SAMPLE_SIDE)
    return np.ascontiguousarray(rgb[::step, ::step, :3])


def write_summary(root: Path, spec: DatasetSpec, episodes: Sequence[EpisodeRecord],
                  episode_stats: Sequence[Mapping[str, Mapping[str, np.ndarray]]],
                  vectors: Mapping[str, Sequence[np.ndarray]], total_tasks: int) -> None:
    """Rewrite ``stats.json`` (vectors exact, the rest merged per episode) and ``info.json``."""
    if episodes:
        merged: Dict[str, Dict[str, np.ndarray]] = {}
        for feature in episode_stats[0]:
            if feature in vectors and vectors[feature]:
                merged[feature] = stats_lib.vector_stats(np.concatenate(vectors[feature]))
            else:
                merged[feature] = stats_lib.merge_stats([s[feature] for s in episode_stats if feature in s])
        atomic_write_bytes(root / STATS_PATH, json.dumps(stats_lib.to_json(merged), indent=2).encode())
    total_frames = episodes[-1].to_index if episodes else 0
    info = build_info(spec, len(episodes), total_frames, total_tasks)
    atomic_write_bytes(root / INFO_PATH, json.dumps(info, indent=2).encode())


def _load_vectors(root: Path, episodes: Sequence[EpisodeRecord], keys: Sequence[str]) -> Dict[str, List[np.ndarray]]:
    vectors: Dict[str, List[np.ndarray]] = {key: [] for key in keys}
    for record in episodes:
        table = pq.read_table(root / DATA_PATH.format(**chunk_file(record.episode_index)), columns=list(keys))
        for key in keys:
            vectors[key].append(_vector_column(table.column(key)))
    return vectors


def repair(root: Path, spec: DatasetSpec) -> RecoveryReport:
    """Bring ``root`` to its last committed state (see the module docstring) and report what changed."""
    report = RecoveryReport()
    root.mkdir(parents=True, exist_ok=True)
    recording = root / RECORDING_DIR
    if recording.exists():
        report.dropped_partial = sorted(str(p.relative_to(root)) for p in recording.iterdir())
        shutil.rmtree(recording)
    for folder in (root / "meta", root / "data"):
        for tmp in folder.rglob(f"*{TMP_SUFFIX}") if folder.exists() else ():
            tmp.unlink()
            report.removed_files.append(str(tmp.relative_to(root)))
    committed = _committed_episodes(root)
    for expected, (path, record, _) in enumerate(committed):
        if record.episode_index != expected:
            raise DatasetError(f"{path}: episode {record.episode_index} where {expected} was expected; "
                               "the dataset was edited outside the writer")
        if not (root / DATA_PATH.format(**chunk_file(expected))).exists():
            raise DatasetError(f"{path}: its data file is missing")
    referenced = {root / DATA_PATH.format(**chunk_file(r.episode_index)) for _, r, _ in committed}
    for data_file in sorted((root / "data").glob("*/*.parquet")):
        if data_file not in referenced:
            data_file.unlink()
            report.removed_files.append(str(data_file.relative_to(root)))
    records = [r for _, r, _ in committed]
    info_path = root / INFO_PATH
    info = json.loads(info_path.read_text()) if info_path.exists() else None
    total_frames = records[-1].to_index if records else 0
    tasks = read_tasks(root)
    if (info is None or info.get("total_episodes") != len(records) or info.get("total_frames") != total_frames
            or info.get("total_tasks") != len(tasks) or (records and not (root / STATS_PATH).exists())):
        vectors = _load_vectors(root, records, [STATE_KEY, ACTION_KEY])
        write_summary(root, spec, records, [s for _, _, s in committed], vectors, len(tasks))
        report.rewrote_meta = info is not None or bool(records)  # a new dataset's first info.json is no repair
    return report


# -- reader ------------------------------------------------------------------------------------

def decode_image_bytes(data: bytes) -> np.ndarray:
    """RGB uint8 pixels of PNG/JPEG bytes."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError("image bytes do not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _vector_column(column: pa.ChunkedArray) -> np.ndarray:
    combined = column.combine_chunks()
    if pa.types.is_fixed_size_list(combined.type):
        return combined.values.to_numpy(zero_copy_only=False).reshape(len(combined), combined.type.list_size)
    return np.asarray(combined.to_pylist(), dtype=np.float32)


class DatasetReader:
    """Reads a dataset written by :class:`DatasetWriter` (or any one-file-per-episode v3.0 dataset).

    Read-only: it never repairs. Only committed episodes are visible.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not info_path.exists():
            raise DatasetError(f"{self.root}: no {INFO_PATH}")
        self.info = read_metadata_json(info_path)
        self.spec = spec_from_info(self.info)
        self.tasks = read_tasks(self.root)
        self.episodes = [record for _, record, _ in _committed_episodes(self.root)]
        # info.json claiming more than the committed episodes hold means episodes are missing (e.g. an interrupted
        # copy); training would silently use a subset. Fewer is the writer's own state between committing an
        # episode and rewriting info.json (see the module docstring), so that stays readable.
        claimed = (self.info.get("total_episodes", 0), self.info.get("total_frames", 0))
        if claimed[0] > len(self.episodes) or claimed[1] > self.num_frames:
            raise DatasetError(f"{info_path}: {claimed[0]} episodes / {claimed[1]} frames, but only "
                               f"{len(self.episodes)} episodes / {self.num_frames} frames are in meta/episodes")
        stats_path = self.root / STATS_PATH
        self.stats = stats_lib.from_json(read_metadata_json(stats_path)) if stats_path.exists() else {}

    @property
    def num_frames(self) -> int:
        """Frames in all committed episodes."""
        return sum(r.length for r in self.episodes)

    def episode(self, index: int, decode_images: bool = True) -> Dict[str, object]:
        """All columns of one episode: vectors as ``[T, D]`` arrays, indices as ``[T]``, images as a list
        of ``[H, W, 3]`` uint8 arrays (or of the stored bytes), ``task`` as a string."""
        record = self.episodes[index]
        path = self.root / DATA_PATH.format(**chunk_file(record.episode_index))
        table = pq.read_table(path)
        if table.num_rows != record.length:
            raise DatasetError(f"{path}: {table.num_rows} frames, but episode {record.episode_index}'s metadata "
                               f"says {record.length}")
        out: Dict[str, object] = {}
        for key, feature in self.spec.features.items():
            column = table.column(key)
            if feature["dtype"] == "image":
                blobs = [item["bytes"] for item in column.to_pylist()]
                out[key] = [decode_image_bytes(b) for b in blobs] if decode_images else blobs
            elif feature["shape"] == [1]:
                out[key] = column.to_numpy()
            else:
                out[key] = _vector_column(column)
        out["task"] = record.tasks[0]
        return out

    def iter_episodes(self, decode_images: bool = True) -> Iterator[Dict[str, object]]:
        """Every committed episode in order."""
        for i in range(len(self.episodes)):
            yield self.episode(i, decode_images)
