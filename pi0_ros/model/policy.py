"""``Pi0Policy``: a checkpoint directory behind the ``pi0_ros.policy_api.Policy`` interface.

All transforms live here, in openpi's order. Input: each camera image is validated, resized with
padding to the model size and scaled to [-1, 1] into its configured slot (base, left wrist, right
wrist); an absent camera becomes a masked black slot. The state is validated (length, finite),
normalized, padded. The prompt is tokenized. Output: the first ``action_dim`` dims of the sampled
chunk are unnormalized, delta dims get the state added back, and a non-finite chunk raises
PolicyOutputError so it can never reach the robot.

Documented input handling (PolicyInputError unless said otherwise): a camera name the policy does not
know, an image that is not uint8 [H, W, 3], a state of the wrong length or with NaN/inf, a prompt that
is not a string or is too long for the token budget, no camera at all. A configured camera that is
absent is allowed and masked out.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from pi0_ros.model import action_transforms, image_transforms, rtc
from pi0_ros.model.checkpoint import Checkpoint, CheckpointError, build_model, read_checkpoint
from pi0_ros.model.normalization import MODES, normalize, unnormalize
from pi0_ros.model.pi0 import Pi0Inputs, Pi0Model
from pi0_ros.model.provenance import trained_action_space
from pi0_ros.model.tokenizer import PromptTokenizer
from pi0_ros.policy_api import Observation, PolicyInputError, PolicyOutputError, PolicyResult

IMAGE_SLOTS = ("base", "left_wrist", "right_wrist")


@dataclasses.dataclass
class Pi0PolicyConfig:
    """Robot-side facts the policy needs; stored in the checkpoint's config.json under ``policy``.

    ``camera_names[i]`` is the observation camera that fills model image slot i (base, left wrist,
    right wrist); an empty string leaves the slot always masked.
    """

    camera_names: List[str]
    state_dim: int
    action_dim: int
    delta_mask: Optional[List[bool]] = None  # per action dim; None = all absolute
    normalization: str = "zscore"
    default_prompt: Optional[str] = None

    def __post_init__(self) -> None:
        if self.delta_mask is None:
            self.delta_mask = [False] * self.action_dim
        self.delta_mask = [bool(x) for x in self.delta_mask]
        action_transforms.check_delta_mask(self.delta_mask, self.action_dim, self.state_dim)
        if self.normalization not in MODES:
            raise ValueError(f"normalization must be one of {MODES}, got {self.normalization!r}")
        named = [n for n in self.camera_names if n]
        if len(set(named)) != len(named):
            raise ValueError(f"camera names repeat: {self.camera_names}")
        if not named:
            raise ValueError("at least one camera name is needed")

    def to_dict(self) -> Dict[str, Any]:
        """JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Pi0PolicyConfig":
        """Inverse of ``to_dict``."""
        return cls(**data)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Pi0Policy:
    """pi0 behind the Policy protocol: ``infer``, ``metadata``, ``reset``."""

    def __init__(self, checkpoint: Checkpoint, device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
                 num_steps: Optional[int] = None, cpu_threads: Optional[int] = None):
        """``cpu_threads`` sets torch's (process-wide) intra-op threads; 1 is fastest for the small
        configs on a busy 2-core machine (bench/pi0_cpu.py)."""
        if cpu_threads is not None:
            torch.set_num_threads(int(cpu_threads))
        self.device = torch.device(device or _default_device())
        self.model_config = checkpoint.model_config
        self.config = Pi0PolicyConfig.from_dict(checkpoint.policy_config)
        self.trained_action_space = trained_action_space(checkpoint.provenance)
        self.tokenizer: PromptTokenizer = checkpoint.tokenizer
        self.num_steps = num_steps or self.model_config.num_steps
        self._check_fit(checkpoint)
        self.state_stats = checkpoint.norm_stats["state"]
        self.action_stats = checkpoint.norm_stats["actions"]
        self._delta_mask = np.asarray(self.config.delta_mask, dtype=bool)
        model: Pi0Model = build_model(self.model_config, checkpoint.weights).to(self.device)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        if dtype != torch.float32:
            model.set_inference_dtype(dtype)
        if self.device.type == "cuda":
            # Fused kernels for vision and prefix; matmul attention for the 51-token denoising steps.
            model.set_attention_impl("sdpa", suffix_impl="eager")
            # Process-wide: TF32 products of bf16-valued q/k are exact with fp32 accumulation, so the fp32
            # attention logits keep their meaning and run on tensor cores.
            torch.backends.cuda.matmul.allow_tf32 = True
        self.model = model.fuse_projections()

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str, device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
                        num_steps: Optional[int] = None, cpu_threads: Optional[int] = None) -> "Pi0Policy":
        """Build from a directory written by ``checkpoint.save_checkpoint`` / ``make_checkpoint``."""
        return cls(read_checkpoint(ckpt_dir), device=device, dtype=dtype, num_steps=num_steps,
                   cpu_threads=cpu_threads)

    def _check_fit(self, ckpt: Checkpoint) -> None:
        cfg, mc = self.config, self.model_config
        if len(cfg.camera_names) > mc.num_cameras:
            raise ValueError(f"{len(cfg.camera_names)} camera names for {mc.num_cameras} image slots")
        if max(cfg.state_dim, cfg.action_dim) > mc.action_dim:
            raise ValueError(f"state/action dims {cfg.state_dim}/{cfg.action_dim} exceed the model's "
                             f"{mc.action_dim}")
        for key, dim in (("state", cfg.state_dim), ("actions", cfg.action_dim)):
            if key not in ckpt.norm_stats:
                raise ValueError(f"norm stats have no {key!r} entry")
            stats = ckpt.norm_stats[key]
            if stats.dim != dim:
                raise ValueError(f"norm stats {key!r} have {stats.dim} dims, expected {dim}")
            # Refused here, not at the first inference: otherwise the checkpoint loads and every call fails.
            missing = [name for name in ("q01", "q99") if getattr(stats, name) is None]
            if cfg.normalization == "quantile" and missing:
                raise CheckpointError(f"quantile normalization needs q01 and q99, but norm stats {key!r} "
                                      f"lack {' and '.join(missing)}")

    @property
    def metadata(self) -> Dict[str, Any]:
        """Static facts for clients (also sent first by the websocket server)."""
        return {"model_type": "pi0", **self._io_metadata(), "num_steps": self.num_steps}

    def _io_metadata(self) -> Dict[str, Any]:
        """What pi0 and pi0-FAST policies share: the observation and action interface."""
        mc = self.model_config
        return {
            "action_horizon": mc.action_horizon,
            "action_dim": self.config.action_dim,
            "state_dim": self.config.state_dim,
            "camera_names": [n for n in self.config.camera_names if n],
            "image_slots": {slot: name for slot, name in zip(IMAGE_SLOTS, self.config.camera_names, strict=False)},
            "image_size": mc.image_size,
            "max_token_len": mc.max_token_len,
            "normalization": self.config.normalization,
            "delta_mask": list(self.config.delta_mask),
            # The dataset's action layout: the policy node executes the chunk in it unless told otherwise
            # (ee poses run as joint angles would be as long as the joint layout and entirely wrong).
            **({"action_space": self.trained_action_space} if self.trained_action_space else {}),
        }

    def reset(self) -> None:
        """pi0 keeps no per-episode state."""

    # ------------------------------------------------------------------------------- input checks
    def _images(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(images, dict):
            raise PolicyInputError("observation['images'] must be a dict of camera name -> image")
        known = set(n for n in self.config.camera_names if n)
        unknown = sorted(set(images) - known)
        if unknown:
            raise PolicyInputError(f"unknown camera(s) {unknown}; this policy takes {sorted(known)}")
        size, n = self.model_config.image_size, self.model_config.num_cameras
        pixels = np.empty((n, 3, size, size), dtype=np.float32)
        masks = np.zeros(n, dtype=bool)
        for slot in range(n):
            name = self.config.camera_names[slot] if slot < len(self.config.camera_names) else ""
            if name and name in images:
                image = image_transforms.check_image(images[name], name)
                pixels[slot] = image_transforms.to_model_pixels(image_transforms.resize_with_pad(image, size))
                masks[slot] = True
            else:
                pixels[slot] = image_transforms.missing_camera_pixels(size)
        if not masks.any():
            raise PolicyInputError("no camera image in the observation")
        return pixels, masks

    def _state(self, state: Any) -> np.ndarray:
        try:
            state = np.asarray(state, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise PolicyInputError(f"state is not numeric: {err}") from err
        if state.shape != (self.config.state_dim,):
            raise PolicyInputError(f"state must have shape ({self.config.state_dim},), got {state.shape}")
        if not np.isfinite(state).all():
            raise PolicyInputError(f"state has NaN/inf at dims {np.flatnonzero(~np.isfinite(state)).tolist()}")
        return state

    def _prompt(self, observation: Observation) -> str:
        prompt = observation.get("prompt")
        if prompt is None:
            prompt = self.config.default_prompt
        if not isinstance(prompt, str):
            raise PolicyInputError("observation['prompt'] must be a string (and no default prompt is set)")
        return prompt

    # ------------------------------------------------------------------------------------- infer
    def prepare(self, observation: Observation) -> tuple[Pi0Inputs, np.ndarray]:
        """Observation -> (model inputs on the device, batch 1; the raw state for delta conversion)."""
        if not isinstance(observation, dict):
            raise PolicyInputError("observation must be a dict")
        pixels, masks = self._images(observation.get("images"))
        state = self._state(observation.get("state"))
        tokens, token_mask = self.tokenizer.tokenize(self._prompt(observation))
        norm_state = action_transforms.pad_to(normalize(state, self.state_stats, self.config.normalization),
                                              self.model_config.action_dim)
        inputs = Pi0Inputs(
            images=torch.from_numpy(pixels)[None],
            image_masks=torch.from_numpy(masks)[None],
            tokens=torch.from_numpy(tokens.astype(np.int64))[None],
            token_masks=torch.from_numpy(token_mask)[None],
            state=torch.from_numpy(norm_state.astype(np.float32))[None],
        )
        return inputs.to(self.device), state

    def postprocess(self, normalized: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Model output [H, A_model] (normalized, padded) -> robot actions [H, action_dim]."""
        actions = unnormalize(normalized[:, : self.config.action_dim], self.action_stats, self.config.normalization)
        actions = action_transforms.to_absolute(actions, state, self._delta_mask)
        if not np.isfinite(actions).all():
            raise PolicyOutputError("the model produced NaN/inf actions")
        return actions

    def infer(self, observation: Observation, *, seed: Optional[int] = None,
              generator: Optional[torch.Generator] = None, noise: Optional[np.ndarray] = None) -> PolicyResult:
        """One action chunk. ``seed``/``generator`` make the noise reproducible; ``noise`` [H, A_model] fixes it.

        An optional ``observation["rtc"]`` (see ``pi0_ros.model.rtc.RTCRequest``) guides the chunk toward
        the previous chunk's remaining actions (real-time chunking).
        """
        t0 = time.perf_counter()
        inputs, state = self.prepare(observation)
        if generator is None and seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        noise_t = None
        if noise is not None:
            expected = (self.model_config.action_horizon, self.model_config.action_dim)
            if np.shape(noise) != expected:
                raise PolicyInputError(f"noise must have shape {expected}, got {np.shape(noise)}")
            noise_t = torch.as_tensor(np.asarray(noise, dtype=np.float32), device=self.device)[None]
        elif generator is not None:
            noise_t = self.model.sample_noise(1, generator, self.device)
        t1 = time.perf_counter()
        if observation.get("rtc") is not None:  # real-time chunking: guided, eager, with grad (model/rtc.py)
            out = rtc.infer_guided(self, inputs, state, observation["rtc"], noise_t)
        else:
            with torch.inference_mode():
                out = self.model.sample_actions(inputs, noise=noise_t, num_steps=self.num_steps)
        normalized = out[0].float().cpu().numpy()
        t2 = time.perf_counter()
        actions = self.postprocess(normalized, state)
        t3 = time.perf_counter()
        return {
            "actions": actions,
            "policy_timing": {"infer_ms": (t3 - t0) * 1e3, "preprocess_ms": (t1 - t0) * 1e3,
                              "model_ms": (t2 - t1) * 1e3, "postprocess_ms": (t3 - t2) * 1e3},
        }


def policy_config_for(camera_names: Sequence[str], state_dim: int, action_dim: int, **kwargs: Any) -> Dict[str, Any]:
    """Validated policy section for ``save_checkpoint`` (raises ValueError on inconsistent settings)."""
    return Pi0PolicyConfig(camera_names=list(camera_names), state_dim=state_dim, action_dim=action_dim,
                           **kwargs).to_dict()
