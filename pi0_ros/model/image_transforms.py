"""Camera images -> model pixels: resize with black padding to the model's square size, then [-1, 1].

Matches openpi's ``resize_with_pad``: keep the aspect ratio, bilinear (PIL), paste centred on black;
an image already at the target size is passed through untouched.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pi0_ros.policy_api import PolicyInputError


def check_image(image: object, name: str) -> np.ndarray:
    """Validate one camera image: uint8 RGB [H, W, 3] with H, W >= 1. Raises PolicyInputError."""
    if not isinstance(image, np.ndarray):
        raise PolicyInputError(f"image {name!r} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise PolicyInputError(f"image {name!r} must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise PolicyInputError(f"image {name!r} must be [H, W, 3] RGB, got shape {image.shape}")
    return image


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [size, size, 3], aspect ratio kept, black bars centred."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    ratio = max(width / size, height / size)
    new_h, new_w = max(1, int(height / ratio)), max(1, int(width / ratio))
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), resample=Image.BILINEAR)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = np.asarray(resized)
    return canvas


def to_model_pixels(image: np.ndarray) -> np.ndarray:
    """uint8 [S, S, 3] -> float32 [3, S, S] in [-1, 1] (channels first for the conv)."""
    pixels = image.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def missing_camera_pixels(size: int) -> np.ndarray:
    """The placeholder for an absent camera: all -1 (black), to be paired with mask False."""
    return np.full((3, size, size), -1.0, dtype=np.float32)
