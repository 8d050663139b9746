"""Action chunks of horizon H from consecutive frames of one episode.

Every frame t of an episode starts a chunk ``actions[t : t + H]``. Near the end of an episode the chunk
runs past the last frame: it is PADDED with the episode's last action and a padding mask marks those
steps (``is_pad``), rather than dropping the last H - 1 frames, so the final approach of every
demonstration (usually the part that decides success) is trained on. Repeating the last action is
"hold still", the natural continuation of a finished demonstration (openpi's behaviour); the trainer
can also leave padded steps out of the loss (``mask_padded``, LeRobot's behaviour).

Chunks never cross episode boundaries.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np


def chunk_at(actions: np.ndarray, start: int, horizon: int) -> Tuple[np.ndarray, np.ndarray]:
    """``actions[start : start + horizon]`` padded with the last action -> (chunk [H, A], is_pad bool [H])."""
    length = actions.shape[0]
    if not 0 <= start < length:
        raise IndexError(f"chunk start {start} outside an episode of {length} frames")
    idx = np.minimum(np.arange(start, start + horizon), length - 1)
    is_pad = np.arange(start, start + horizon) >= length
    return actions[idx], is_pad


def resting_chunk_starts(actions: np.ndarray, horizon: int, tolerance: float) -> np.ndarray:
    """Frames whose (padded) chunk stays within ``tolerance`` of its first action in every dimension: chunks
    that tell the robot to stay where it is (e.g. a demonstration's dwell at its end), int64, ascending."""
    resting = [t for t in range(actions.shape[0])
               if np.abs(chunk_at(actions, t, horizon)[0] - actions[t]).max() <= tolerance]
    return np.asarray(resting, dtype=np.int64)


def chunk_index(lengths: Sequence[int], dropped: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """All (episode, frame) chunk starts, int64 [N, 2], episode-major; ``dropped[e]``: frames of episode e
    that start no chunk."""
    rows: List[np.ndarray] = []
    for ep, length in enumerate(lengths):
        frames = np.arange(int(length), dtype=np.int64)
        if dropped is not None:
            frames = np.setdiff1d(frames, dropped[ep])
        if frames.size:
            rows.append(np.stack([np.full_like(frames, ep), frames], axis=1))
    if not rows:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(rows, axis=0)
