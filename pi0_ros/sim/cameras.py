"""Offscreen rendering of the simulated cameras from a snapshot of the simulator state.

A :class:`CameraRenderer` owns its own ``MjData`` and OpenGL contexts, so it can run in a thread of
its own: the physics loop hands over a ``qpos`` copy and never waits for a frame. OpenGL contexts
belong to the thread that made them, so create, use and close a renderer in one thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import mujoco
import numpy as np


@dataclass(frozen=True)
class CameraSpec:
    """One camera to render: its MuJoCo camera name and output size."""

    name: str
    width: int
    height: int


class CameraRenderer:
    """Renders named model cameras to RGB uint8 arrays of shape (height, width, 3)."""

    def __init__(self, model: mujoco.MjModel, cameras: Sequence[CameraSpec]):
        self.model = model
        self.cameras = {c.name: c for c in cameras}
        for camera in cameras:
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera.name) < 0:
                raise KeyError(f"camera {camera.name!r} not in the simulated model")
            if camera.width <= 0 or camera.height <= 0:
                raise ValueError(f"camera {camera.name}: size must be positive, got {camera.width}x{camera.height}")
            if camera.width > model.vis.global_.offwidth or camera.height > model.vis.global_.offheight:
                raise ValueError(f"camera {camera.name}: {camera.width}x{camera.height} exceeds the model's "
                                 f"offscreen buffer {model.vis.global_.offwidth}x{model.vis.global_.offheight}; "
                                 "build the scene with render_sizes")
        self.data = mujoco.MjData(model)
        # One renderer per distinct size: a renderer draws at one fixed size.
        self._renderers: Dict[Tuple[int, int], mujoco.Renderer] = {}
        for camera in cameras:
            key = (camera.width, camera.height)
            if key not in self._renderers:
                self._renderers[key] = mujoco.Renderer(model, height=camera.height, width=camera.width)

    def set_state(self, qpos: np.ndarray) -> None:
        """Pose the scene: positions only (kinematics and camera poses are all a picture needs)."""
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def render(self, camera: str, out: Optional[np.ndarray] = None) -> np.ndarray:
        """RGB image of ``camera`` at the pose of the last :meth:`set_state`."""
        spec = self.cameras[camera]
        renderer = self._renderers[(spec.width, spec.height)]
        renderer.update_scene(self.data, camera=camera)
        return renderer.render(out=out)

    def render_all(self, qpos: np.ndarray, names: Optional[Sequence[str]] = None) -> Mapping[str, np.ndarray]:
        """Pose the scene from ``qpos`` and render every (or the named) camera."""
        self.set_state(qpos)
        return {name: self.render(name) for name in (names or list(self.cameras))}

    def close(self) -> None:
        """Free the OpenGL contexts (call from the thread that created them)."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def __enter__(self) -> "CameraRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
