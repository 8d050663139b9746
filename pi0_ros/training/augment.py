"""Image augmentation for training, applied to a whole batch on the training device.

Without it a small policy learns the exact pixels of its demonstrations: in the simulator a pi0-FAST
model trained on recorded (JPEG-compressed) frames answered a live render of the same scene, which
differs by less than one intensity level on average, with a chunk unlike any demonstration, and the
robot never moved toward the cube. The transforms follow openpi's pi0 training recipe: a random crop
of 95 % of the area plus a small rotation on the fixed cameras (wrist cameras keep their geometry,
which carries the gripper-to-object offset), and brightness / contrast / saturation jitter on every
camera. Pixels are the model's [-1, 1] images ``[B, N, 3, H, W]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageAugmentConfig:
    """Ranges of the random transforms (0 turns one off)."""

    crop_area: float = 0.95  # fraction of the image area kept by the crop (fixed cameras)
    max_rotation_deg: float = 5.0  # fixed cameras
    brightness: float = 0.3  # factor in [1 - b, 1 + b]
    contrast: float = 0.4
    saturation: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.crop_area <= 1.0:
            raise ValueError(f"crop_area must be in (0, 1], got {self.crop_area}")
        if self.max_rotation_deg < 0:
            raise ValueError(f"max_rotation_deg must be >= 0, got {self.max_rotation_deg}")


def is_wrist_camera(name: str) -> bool:
    """Wrist cameras keep their geometry (by name, as the embodiment names them)."""
    return "wrist" in name


def _uniform(shape: Sequence[int], half_width: float, generator: Optional[torch.Generator],
             device: torch.device) -> torch.Tensor:
    return (torch.rand(*shape, generator=generator, device=device) * 2 - 1) * half_width


def augment_images(images: torch.Tensor, geometric: Sequence[bool], config: ImageAugmentConfig = ImageAugmentConfig(),
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Randomly transformed copy of ``images`` [B, N, 3, H, W] in [-1, 1]; ``geometric[n]``: camera slot n
    gets the crop and rotation. Each image draws its own parameters."""
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"expected images [B, N, 3, H, W], got {tuple(images.shape)}")
    b, n, _, h, w = images.shape
    if len(geometric) != n:
        raise ValueError(f"{len(geometric)} camera flags for {n} camera slots")
    device = images.device
    x = images.float().flatten(0, 1)  # [B*N, 3, H, W]
    flags = torch.tensor(list(geometric), dtype=torch.bool, device=device).repeat(b)
    if bool(flags.any()) and (config.crop_area < 1.0 or config.max_rotation_deg > 0):
        count = x.shape[0]
        scale = math.sqrt(config.crop_area)
        angle = _uniform((count,), math.radians(config.max_rotation_deg), generator, device)
        shift = _uniform((count, 2), 1.0 - scale, generator, device)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1)
        identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device)
        theta = torch.where(flags[:, None, None], theta, identity)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Border padding: a rotated crop never shows black corners the cameras cannot produce.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = (x + 1) / 2  # [0, 1] for the photometric transforms
    count = x.shape[0]
    if config.brightness > 0:
        x = x * (1 + _uniform((count, 1, 1, 1), config.brightness, generator, device))
    gray_weights = torch.tensor([0.299, 0.587, 0.114], device=device)[None, :, None, None]
    if config.contrast > 0:
        mean = (x * gray_weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (x - mean) * (1 + _uniform((count, 1, 1, 1), config.contrast, generator, device)) + mean
    if config.saturation > 0:
        gray = (x * gray_weights).sum(1, keepdim=True)
        x = (x - gray) * (1 + _uniform((count, 1, 1, 1), config.saturation, generator, device)) + gray
    x = x.clamp(0, 1) * 2 - 1
    return x.reshape(images.shape).to(images.dtype)
