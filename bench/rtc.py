"""Real-time chunking benchmark: a ROS-free 50 Hz closed loop consuming each chunk strategy.

A simulated control loop (simulated time, so the injected inference delay is exact and the 2-core
machine's speed does not matter) runs in the same order as ``ControlCore.tick``: collect a finished
chunk, take this tick's targets from the strategy, then start an inference if the strategy wants one.
The robot tracks commands perfectly (the measured state is the last command), so every jump in the
command stream comes from chunk scheduling. An inference started at ``obs_time`` becomes available
``delay`` later (0, 100, 300 ms); with 0 ms it is collected at the next tick (the node's order).

Policies:
- ``analytic``: an exact flow-matching velocity field (closed form) for a chunk distribution that is a
  mixture of two Gaussian processes: follow a 4 s sinusoidal reference in one of two phases (the two
  "ways" to do the task) starting from the measured joints, with smooth per-chunk noise. It is
  differentiable, so RTC's VJP runs through it exactly as through pi0's expert.
- ``pi0_tiny``: the real ``Pi0Policy`` (pi0_tiny config, random weights, 4 absolute action dims,
  action std 0.1) with ``observation["rtc"]`` handled by ``pi0_ros.model.rtc``.

Per strategy and delay: missed control ticks (no target after the first chunk), the largest and median
joint-position step and joint-velocity change at chunk boundaries (the tick a new chunk starts to
drive the command), the same maxima over all other ticks for reference, and for ``rtc`` how far the
first d guided actions are from the previous chunk's.

    .venv/bin/python bench/rtc.py --policy analytic --duration 60 --seeds 3
    .venv/bin/python bench/rtc.py --policy pi0_tiny --duration 20 --seeds 1
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from pi0_ros.control.action_codec import DecodedChunk  # noqa: E402
from pi0_ros.control.chunk_strategies import inference_request  # noqa: E402
from pi0_ros.control.chunking import Chunk, make_strategy  # noqa: E402
from pi0_ros.model import rtc  # noqa: E402
from pi0_ros.model.normalization import NormStats  # noqa: E402

STRATEGY_NAMES = ("sync", "async_naive", "temporal_ensemble", "fast_blend", "rtc")
DT = 0.02
HORIZON = 50
EXECUTE_STEPS = 25  # ControlConfig's default
MARGIN_STEPS = 3


class AnalyticFlowPolicy:
    """pi0-shaped policy whose velocity field is the exact flow-matching field of a GP mixture.

    Chunk distribution given (state q, time T): mode k with probability 1/K, then
    a[h] = r_k(T + h dt) + (q - r_k(T)) exp(-(h + 1) dt / tau) + n[h], with r_k a sinusoid of period
    ``period`` and phase offset 2 pi k / K per mode, n a zero-mean GP over h (RBF, ``lengthscale``
    steps, std ``noise_std``), independent per joint. With x_t = t eps + (1 - t) a (openpi convention),
    x_t | k is Gaussian, so v(x_t, t) = E[eps - a | x_t] is closed form (mode posterior x Gaussian
    conditional), computed in the RBF kernel's eigenbasis.
    """

    def __init__(self, dims: int = 4, horizon: int = HORIZON, dt: float = DT, modes: int = 2,
                 noise_std: float = 0.03, lengthscale: float = 8.0, period: float = 4.0, amplitude: float = 0.6,
                 tau: float = 0.3, num_steps: int = 10, seed: int = 0):
        self.dims, self.horizon, self.dt, self.modes = dims, horizon, dt, modes
        self.period, self.tau, self.num_steps = period, tau, num_steps
        self.amplitude = amplitude * np.linspace(1.0, 0.5, dims)
        self.joint_phase = np.linspace(0.0, math.pi / 2, dims)
        h = np.arange(horizon, dtype=np.float64)
        kernel = np.exp(-((h[:, None] - h[None, :]) ** 2) / (2 * lengthscale**2))
        lam, u = np.linalg.eigh(kernel)
        self.u = torch.tensor(u, dtype=torch.float32)
        self.s = torch.tensor(noise_std**2 * np.clip(lam, 0.0, None) + 1e-6, dtype=torch.float32)[:, None]
        self.rng = np.random.default_rng(seed)
        self.stats = NormStats(mean=np.zeros(dims), std=np.ones(dims))

    def reference(self, t: np.ndarray, mode: int) -> np.ndarray:
        """[len(t), dims] joint reference of one mode."""
        phase = 2 * math.pi * t[:, None] / self.period + self.joint_phase + 2 * math.pi * mode / self.modes
        return self.amplitude * np.sin(phase)

    def means(self, q: np.ndarray, obs_time: float) -> torch.Tensor:
        """[K, H, dims] per-mode mean chunks."""
        times = obs_time + self.dt * np.arange(self.horizon)
        decay = np.exp(-(np.arange(self.horizon) + 1) * self.dt / self.tau)[:, None]
        out = [self.reference(times, k) + (q - self.reference(times[:1], k)) * decay for k in range(self.modes)]
        return torch.tensor(np.stack(out), dtype=torch.float32)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, mus: torch.Tensor) -> torch.Tensor:
        """Exact v(x_t, t) [1, H, dims]; differentiable in x."""
        c = t * t + (1 - t) ** 2 * self.s  # [H, 1] eigenvalues of Cov(x_t | k)
        y = torch.einsum("hg,kgd->khd", self.u.T, x[0][None] - (1 - t) * mus)  # eigen-coordinates
        loglik = -0.5 * (y * y / c).sum(dim=(1, 2))
        r = torch.softmax(loglik, dim=0)[:, None, None]
        e_eps = t * torch.einsum("hg,kgd->khd", self.u, y / c)
        e_a = mus + (1 - t) * torch.einsum("hg,kgd->khd", self.u, self.s * y / c)
        return (r * (e_eps - e_a)).sum(dim=0)[None]

    def infer(self, observation: Dict[str, Any]) -> Dict[str, Any]:
        """One chunk; ``observation["rtc"]`` guides it exactly as Pi0Policy does (identity normalization)."""
        q = np.asarray(observation["state"], dtype=np.float64)
        mus = self.means(q, float(observation["sim_time"]))
        noise = torch.tensor(self.rng.normal(size=(1, self.horizon, self.dims)), dtype=torch.float32)
        target = torch.zeros(1, self.horizon, self.dims)
        weights = torch.zeros(1, self.horizon, self.dims)
        beta = 0.0
        if observation.get("rtc") is not None:
            request = rtc.RTCRequest.parse(observation["rtc"], self.dims)
            tgt, w = request.model_space(self.horizon, self.dims, q, np.zeros(self.dims, bool), self.stats, "zscore")
            target, weights, beta = torch.from_numpy(tgt)[None], torch.from_numpy(w)[None], request.max_guidance_weight
        out = rtc.guided_sample(lambda x, t: self.velocity(x, t, mus), noise, self.num_steps, target, weights, beta)
        return {"actions": out[0].numpy().astype(np.float32)}

    def initial_state(self) -> np.ndarray:
        """Where the robot starts: on mode 0's reference at t = 0."""
        return self.reference(np.zeros(1), 0)[0]


class Pi0TinyPolicy:
    """The real Pi0Policy (pi0_tiny, random weights) with a fixed camera image; state = joints."""

    def __init__(self, dims: int = 4, seed: int = 0, device: str = "cpu"):
        from pi0_ros.model.checkpoint import Checkpoint, weights_for_saving
        from pi0_ros.model.config import get_pi0_config
        from pi0_ros.model.pi0 import Pi0Model
        from pi0_ros.model.policy import Pi0Policy, policy_config_for
        from pi0_ros.model.tokenizer import default_corpus, train_tokenizer

        torch.manual_seed(seed)
        cfg = get_pi0_config("pi0_tiny", action_horizon=HORIZON)
        model = Pi0Model(cfg).eval()
        tokenizer = train_tokenizer(default_corpus(), vocab_size=512, max_len=cfg.max_token_len)
        stats = {"state": NormStats(mean=np.zeros(dims), std=np.full(dims, 0.1)),
                 "actions": NormStats(mean=np.zeros(dims), std=np.full(dims, 0.1))}
        ckpt = Checkpoint(cfg, policy_config_for(["head", "", ""], dims, dims), weights_for_saving(model), stats,
                          tokenizer)
        self.policy = Pi0Policy(ckpt, device=device)
        self.image = np.random.default_rng(seed).integers(0, 255, (224, 224, 3), dtype=np.uint8)
        self.dims = dims

    def infer(self, observation: Dict[str, Any]) -> Dict[str, Any]:
        """Pi0Policy.infer on the fixed image, the joints and a fixed prompt (plus ``rtc`` when given)."""
        obs = {"images": {"head": self.image}, "state": np.asarray(observation["state"], np.float32),
               "prompt": "fold the towel"}
        if "rtc" in observation:
            obs["rtc"] = observation["rtc"]
        return self.policy.infer(obs)

    def initial_state(self) -> np.ndarray:
        """All joints at zero."""
        return np.zeros(self.dims)


def run_loop(policy: Any, strategy_name: str, delay_s: float, duration_s: float,
             max_guidance: Optional[float] = None, schedule: Optional[str] = None) -> Dict[str, Any]:
    """One closed-loop run; returns the metrics."""
    strategy = make_strategy(strategy_name, DT, EXECUTE_STEPS, MARGIN_STEPS)
    if hasattr(strategy, "max_guidance_weight"):
        strategy.max_guidance_weight, strategy.schedule = max_guidance, schedule
    q = np.asarray(policy.initial_state(), dtype=np.float64)
    commands, boundary = [], []
    missed, first_tick = 0, None
    pending: Optional[Chunk] = None
    latency_est, chunks = 0.0, 0
    prefix_errors: List[float] = []
    infer_s: List[float] = []
    gaps: List[float] = []
    shadow = None  # the strategy as it would be without the newest chunk (for the switch gap)
    for tick in range(int(round(duration_s / DT))):
        now = tick * DT
        if pending is not None and pending.ready_time <= now + 1e-9:
            shadow = copy.deepcopy(strategy)
            if hasattr(shadow, "_limit"):  # sync: the old chunk would have continued past execute_steps
                shadow.execute_steps = 10**9
            strategy.add(pending)
            chunks += 1
            measured = now - pending.obs_time
            latency_est = measured if chunks == 1 else 0.7 * latency_est + 0.3 * measured  # the node's EMA
            pending = None
        started = strategy.started
        targets = strategy.next_targets(now)
        without = shadow.next_targets(now) if shadow is not None else None
        if strategy.started != started and targets is not None and without is not None:
            gaps.append(float(np.abs(targets["arm"] - without["arm"]).max()))
        if targets is None:
            if first_tick is not None:
                missed += 1  # the robot holds
        else:
            q = np.asarray(targets["arm"], dtype=np.float64)
            if first_tick is None:
                first_tick = tick
        boundary.append(strategy.started != started)
        commands.append(q.copy())
        if pending is None and strategy.wants_inference(now, latency_est):
            obs: Dict[str, Any] = {"state": q.copy(), "sim_time": now}
            obs.update(inference_request(strategy, now, latency_est))
            t0 = time.perf_counter()
            actions = np.asarray(policy.infer(obs)["actions"], dtype=np.float64)
            infer_s.append(time.perf_counter() - t0)
            if "rtc" in obs:
                request = obs["rtc"]
                d = min(request["delay_steps"], len(request["prev_actions"]))
                if d:
                    prefix_errors.append(float(np.abs(actions[:d] - request["prev_actions"][:d]).max()))
            pending = Chunk(actions=actions, decoded=DecodedChunk(targets={"arm": actions}), obs_time=now,
                            ready_time=now + delay_s, request_id=chunks)
    return summarize(np.asarray(commands), np.asarray(boundary), first_tick, missed, prefix_errors, infer_s, gaps)


def summarize(commands: np.ndarray, boundary: np.ndarray, first_tick: Optional[int], missed: int,
              prefix_errors: List[float], infer_s: List[float], gaps: List[float]) -> Dict[str, Any]:
    """Jump metrics from the command stream (ticks after the first chunk's first tick)."""
    start = (first_tick or 0) + 2  # the first chunk's jump from the initial pose is start-up, not a boundary
    step = np.abs(np.diff(commands, axis=0)).max(axis=1)  # step[i]: tick i -> i + 1
    velocity = np.diff(commands, axis=0) / DT
    accel = np.zeros_like(step)
    accel[1:] = np.abs(np.diff(velocity, axis=0)).max(axis=1)  # accel[i]: velocity change arriving at i + 1
    ticks = np.arange(start, len(commands))
    is_boundary = boundary[ticks]
    idx = ticks - 1
    b_pos, b_vel = step[idx][is_boundary], accel[idx][is_boundary]
    # A boundary's velocity change shows at the tick and the next one; count the larger.
    b_vel_next = accel[np.minimum(idx + 1, len(accel) - 1)][is_boundary]
    b_vel = np.maximum(b_vel, b_vel_next)
    other = ~is_boundary & ~np.roll(is_boundary, 1)
    return {
        "missed_ticks": missed,
        "boundaries": int(is_boundary.sum()),
        "switch_gap_max": float(max(gaps)) if gaps else float("nan"),
        "switch_gap_p90": float(np.percentile(gaps, 90)) if gaps else float("nan"),
        "switch_gap_median": float(np.median(gaps)) if gaps else float("nan"),
        "boundary_pos_jump_max": float(b_pos.max()) if b_pos.size else float("nan"),
        "boundary_pos_jump_median": float(np.median(b_pos)) if b_pos.size else float("nan"),
        "boundary_pos_jump_p90": float(np.percentile(b_pos, 90)) if b_pos.size else float("nan"),
        "boundary_vel_jump_max": float(b_vel.max()) if b_vel.size else float("nan"),
        "boundary_vel_jump_median": float(np.median(b_vel)) if b_vel.size else float("nan"),
        "other_pos_step_max": float(step[idx][other].max()),
        "other_vel_change_max": float(accel[idx][other].max()),
        "rtc_prefix_err_max": float(max(prefix_errors)) if prefix_errors else float("nan"),
        "infer_ms_median": float(np.median(infer_s) * 1e3) if infer_s else float("nan"),
    }


def combine(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Seeds together: sums for counts, max of maxima, mean of medians."""
    out: Dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if key in ("missed_ticks", "boundaries"):
            out[key] = int(sum(values))
        elif key.endswith("_max"):
            out[key] = float(np.nanmax(values)) if not all(math.isnan(v) for v in values) else float("nan")
        else:
            out[key] = float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else float("nan")
    return out


def make_policy(name: str, seed: int, device: str = "cpu") -> Any:
    if name == "analytic":
        return AnalyticFlowPolicy(seed=seed)
    if name == "pi0_tiny":
        return Pi0TinyPolicy(seed=seed, device=device)
    raise ValueError(f"unknown policy {name!r}")


def time_guidance(config: str, device: str, repeats: int = 20) -> int:
    """Median wall time of ``sample_actions`` vs ``rtc.sample_actions_rtc`` (random weights, bf16 on GPU)."""
    from pi0_ros.model.config import get_pi0_config
    from pi0_ros.model.pi0 import Pi0Inputs, Pi0Model

    cfg = get_pi0_config(config)
    torch.manual_seed(0)
    with torch.device(device):
        model = Pi0Model(cfg).eval()
    if device.startswith("cuda"):
        model.set_inference_dtype(torch.bfloat16).set_attention_impl("sdpa")
    s = cfg.image_size
    cams = cfg.num_cameras
    inputs = Pi0Inputs(torch.rand(1, cams, 3, s, s) * 2 - 1, torch.ones(1, cams, dtype=torch.bool),
                       torch.randint(3, 200, (1, cfg.max_token_len)), torch.arange(cfg.max_token_len)[None] < 20,
                       torch.randn(1, cfg.action_dim)).to(device)
    h, a = cfg.action_horizon, cfg.action_dim
    target = torch.randn(1, h, a, device=device)
    weights = torch.from_numpy(rtc.soft_mask(h, 5, h - 25))[None, :, None].expand(1, h, a).to(device)

    def timed(fn) -> List[float]:
        out = []
        for _ in range(repeats + 3):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            out.append((time.perf_counter() - t0) * 1e3)
        return out[3:]  # warm-up dropped

    def plain() -> None:
        with torch.inference_mode():
            model.sample_actions(inputs, noise=torch.randn(1, h, a, device=device))

    def guided() -> None:
        rtc.sample_actions_rtc(model, inputs, torch.randn(1, h, a, device=device), target, weights)

    def prefill() -> None:
        with torch.inference_mode():
            model.prefill(inputs)

    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# {config} random weights on {device} ({name}), torch {torch.__version__}, {repeats} runs, eager")
    print("| what | median ms | min ms |")
    print("|---|---|---|")
    for label, fn in (("prefix only (prefill)", prefill), ("plain sample_actions (10 steps)", plain),
                      ("rtc sample_actions_rtc (10 steps + VJP)", guided)):
        ms = timed(fn)
        print(f"| {label} | {np.median(ms):.1f} | {min(ms):.1f} |", flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="analytic", choices=("analytic", "pi0_tiny"))
    parser.add_argument("--delays-ms", default="0,100,300")
    parser.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-guidance", type=float, default=None, help="rtc beta (default: the policy's)")
    parser.add_argument("--schedule", default=None, choices=rtc.SCHEDULES, help="rtc soft-mask decay (default: rtc's)")
    parser.add_argument("--device", default="cpu", help="pi0_tiny's device (cuda on the GPU machine)")
    parser.add_argument("--timing", default=None, metavar="CONFIG",
                        help="instead: time plain vs RTC-guided sampling of a random-weight pi0 CONFIG")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.timing:
        return time_guidance(args.timing, args.device)
    delays = [float(x) / 1e3 for x in args.delays_ms.split(",")]
    names = [n for n in args.strategies.split(",") if n]
    results = []
    print(f"# policy {args.policy}, {args.duration:g} s x {args.seeds} seeds at {1 / DT:g} Hz, H={HORIZON}, "
          f"execute_steps={EXECUTE_STEPS}, margin={MARGIN_STEPS}; {platform.node()} torch {torch.__version__}")
    header = ("| delay ms | strategy | missed ticks | boundaries | switch gap max / p90 / median (rad) | "
              "pos jump max / p90 / median (rad) | "
              "vel jump max / median (rad/s) | other ticks: pos step / vel change max | rtc prefix err max | "
              "infer ms |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for delay in delays:
        for name in names:
            runs = [run_loop(make_policy(args.policy, seed, args.device), name, delay, args.duration, args.max_guidance,
                             args.schedule)
                    for seed in range(args.seeds)]
            m = combine(runs)
            results.append({"policy": args.policy, "delay_ms": delay * 1e3, "strategy": name, **m})
            print(f"| {delay * 1e3:.0f} | {name} | {m['missed_ticks']} | {m['boundaries']} | "
                  f"{m['switch_gap_max']:.4f} / {m['switch_gap_p90']:.4f} / {m['switch_gap_median']:.4f} | "
                  f"{m['boundary_pos_jump_max']:.4f} / {m['boundary_pos_jump_p90']:.4f} / "
                  f"{m['boundary_pos_jump_median']:.4f} | "
                  f"{m['boundary_vel_jump_max']:.2f} / {m['boundary_vel_jump_median']:.2f} | "
                  f"{m['other_pos_step_max']:.4f} / {m['other_vel_change_max']:.2f} | "
                  f"{m['rtc_prefix_err_max']:.4f} | {m['infer_ms_median']:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
