"""Our pi0 against an independent implementation (LeRobot's PyTorch pi0) on identical weights and inputs.

The peer is NOT part of this repository: it is imported at run time from the location given on the
command line (a virtual environment with ``lerobot`` and openpi's patched ``transformers``, or extra
``sys.path`` folders). The script

1. builds the peer's ``PI0Pytorch`` (full size, or a reduced shape with 8 heads, which LeRobot's joint
   attention hard-codes) and fills every parameter with seeded random values;
2. exports the peer's state dict under LeRobot's own key names (``model.`` prefix, written to
   safetensors as LeRobot saves it) and loads it into our ``Pi0Model`` with OUR checkpoint loader
   (strict: every tensor must map);
3. feeds both the same images, camera masks, prompt tokens/masks, state, noise (and, for the loss,
   actions and time), and compares prefix embeddings, every module output that both models call under
   the same parameter path (layer by layer), the per-step velocities (at the peer's own x_t and t, and
   along each model's own trajectory), the sampled actions and the training loss;
4. with ``--bench`` (GPU): times the peer's and our eager ``sample_actions`` on the same workload and
   prints the ratio.

Usage:
  .venv/bin/python bench/pi0_peer_compare.py --peer-venv /tmp/peer_venv                 # reduced, CPU
  .venv/bin/python bench/pi0_peer_compare.py --peer-venv /tmp/peer_venv --config full  # needs ~30 GB RAM
  python3 bench/pi0_peer_compare.py --peer-path /tmp/peerlib --config full --device cuda --in-memory \\
      --bench --out $OUT/peer.json                                                     # device machine
Peer set-up (outside the repo): see BENCHMARKS.md, "pi0 equivalence with an independent implementation".
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from _timing import capture_graph, cuda_event_ms  # bench/, the script's folder (no torch at import)

REPO = Path(__file__).resolve().parents[1]

# Modules LeRobot imports at package import time for its dataset/video utilities only (never on the
# pi0 model path). Where no working build exists (e.g. a CUDA torchvision next to a CPU torch) they
# are replaced by inert stubs that raise if anything actually calls into them.
DEFAULT_STUBS = "torchvision,av"


# ------------------------------------------------------------------------------------ environment
def _reexec_in_venv(venv: str) -> None:
    """Run this script with the peer venv's interpreter (our package is pure torch, found via PYTHONPATH)."""
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        sys.exit(f"--peer-venv {venv}: no bin/python there")
    if Path(sys.prefix).resolve() == Path(venv).resolve():
        return
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


class _Inert:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("stubbed module called: the pi0 comparison must not need it")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: List[str]):
        self.roots = roots

    def find_spec(self, name, path, target=None):  # noqa: D102
        if any(name == r or name.startswith(r + ".") for r in self.roots):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):  # noqa: D102
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__version__ = "0+stub"

        def attr(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            return _Inert if name[:1].isupper() else _Inert()

        module.__getattr__ = attr
        return module

    def exec_module(self, module):  # noqa: D102
        pass


def _install_stubs(names: List[str]) -> List[str]:
    """Stub each module of ``names`` that cannot be imported as it is; returns the stubbed ones."""
    broken = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any failure (missing, ABI mismatch) means "unusable here"
            broken.append(name)
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[key]
    if broken:
        sys.meta_path.insert(0, _StubFinder(broken))
    return broken


def _enable_patched_transformers() -> None:
    """LeRobot finds transformers by distribution name; openpi's build installs as ``transformers-openpi``."""
    import importlib.util

    from lerobot.utils import import_utils

    if not import_utils._transformers_available and importlib.util.find_spec("transformers"):
        import_utils._transformers_available = True


# --------------------------------------------------------------------------------------- shapes
# Reduced shape: LeRobot's joint attention reshapes to 8 * head_dim, so 8 query heads are kept.
REDUCED = {
    "image_size": 56, "patch": 14,
    "vision": dict(width=64, depth=2, mlp_dim=128, num_heads=4),
    "llm": dict(width=64, depth=3, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    "expert": dict(width=32, depth=3, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16),
}
PALIGEMMA_VOCAB = 257_152  # LeRobot fixes the PaliGemma vocabulary


def our_config(shape: str, horizon: int, prompt_len: int, steps: int):
    from pi0_ros.model.config import Pi0Config, get_pi0_config
    from pi0_ros.model.gemma import GemmaConfig
    from pi0_ros.model.siglip import SiglipConfig

    if shape == "full":
        return get_pi0_config("pi0", action_horizon=horizon, max_token_len=prompt_len, num_steps=steps)
    r = REDUCED
    return Pi0Config(
        vision=SiglipConfig(image_size=r["image_size"], patch_size=r["patch"], **r["vision"]),
        llm=GemmaConfig(vocab_size=PALIGEMMA_VOCAB, **r["llm"]),
        expert=GemmaConfig(**r["expert"]),
        num_cameras=3, action_dim=32, action_horizon=horizon, max_token_len=prompt_len, num_steps=steps,
    )


def build_peer(shape: str, horizon: int, prompt_len: int, steps: int, dtype: str, device: str):
    """LeRobot's PI0Pytorch; for the reduced shape its config helpers are patched at run time only."""
    import torch
    from lerobot.policies.pi0 import modeling_pi0 as lm
    from lerobot.policies.pi0.configuration_pi0 import PI0Config

    size = REDUCED["image_size"] if shape == "reduced" else 224
    cfg = PI0Config(dtype=dtype, chunk_size=horizon, n_action_steps=horizon, num_inference_steps=steps,
                    tokenizer_max_length=prompt_len, image_resolution=(size, size), device=device)
    saved = (lm.get_gemma_config, lm.PaliGemmaForConditionalGeneration)
    if shape == "reduced":
        def gemma_config(variant: str):
            return lm.GemmaConfig(**REDUCED["llm" if variant == "gemma_2b" else "expert"])

        def paligemma(config):
            v = config.vision_config
            v.hidden_size = REDUCED["vision"]["width"]
            v.num_hidden_layers = REDUCED["vision"]["depth"]
            v.intermediate_size = REDUCED["vision"]["mlp_dim"]
            v.num_attention_heads = REDUCED["vision"]["num_heads"]
            v.projection_dim = config.text_config.hidden_size
            return saved[1](config=config)

        lm.get_gemma_config, lm.PaliGemmaForConditionalGeneration = gemma_config, paligemma
    try:
        with torch.device(device):
            model = lm.PI0Pytorch(cfg)
    finally:
        lm.get_gemma_config, lm.PaliGemmaForConditionalGeneration = saved
    return model.eval(), cfg


def randomize_(model, seed: int) -> None:
    """Seeded random values for every parameter, scaled so activations stay O(1) at any depth.

    Gemma RMSNorm weights (stored as offsets from 1) get N(0, 0.1^2), LayerNorm weights 1 + N(0, 0.1^2),
    biases N(0, 0.02^2), token embeddings N(0, 1/width), matrices N(0, 1/fan_in).
    """
    import torch

    g = None
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if g is None or g.device != p.device:
                g = torch.Generator(device=p.device).manual_seed(seed)
            noise = torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32)
            leaf = name.rsplit(".", 2)
            if "layer_norm" in name or "post_layernorm" in name:
                value = 1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
            elif "layernorm" in name or name.endswith("norm.weight"):
                value = 0.1 * noise
            elif name.endswith("bias"):
                value = 0.02 * noise
            elif "embed_tokens" in name or leaf[-2] == "lm_head":
                value = noise * p.shape[-1] ** -0.5
            elif "position_embedding" in name:
                value = 0.1 * noise
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                value = noise * fan_in ** -0.5
            p.copy_(value.to(p.dtype))


def lerobot_state_dict(peer) -> Dict[str, Any]:
    """The peer's tensors under a LeRobot PI0Policy's names (``model.`` + PI0Pytorch names)."""
    return {f"model.{k}": v for k, v in peer.state_dict().items()}


def export_lerobot_state_dict(peer, path: str) -> None:
    """Write the peer's weights exactly as a LeRobot PI0Policy would (``model.`` prefix, tied dedup)."""
    from safetensors.torch import save_model
    from torch import nn

    holder = nn.Module()
    holder.model = peer
    save_model(holder, path)


# ---------------------------------------------------------------------------------------- inputs
def make_inputs(cfg, batch: int, seed: int, device: str, valid_lengths: List[int]):
    """Images in [-1, 1], camera masks (row 0 misses its left wrist camera), right-padded prompts,
    14-dim state zero-padded to 32, noise, ground-truth actions and flow times."""
    import torch

    from pi0_ros.model.pi0 import Pi0Inputs

    g = torch.Generator().manual_seed(seed)
    s, n, a, h = cfg.image_size, cfg.num_cameras, cfg.action_dim, cfg.action_horizon
    images = torch.rand(batch, n, 3, s, s, generator=g) * 2 - 1
    image_masks = torch.ones(batch, n, dtype=torch.bool)
    if batch > 1:
        image_masks[0, 1] = False
        images[0, 1] = -1.0  # what a missing camera looks like in both implementations
    tokens = torch.randint(3, 32_000, (batch, cfg.max_token_len), generator=g)
    token_masks = torch.zeros(batch, cfg.max_token_len, dtype=torch.bool)
    for row in range(batch):
        length = min(cfg.max_token_len, valid_lengths[row % len(valid_lengths)])
        token_masks[row, :length] = True
        tokens[row, length:] = 0
    state = torch.zeros(batch, a)
    state[:, :14] = torch.randn(batch, 14, generator=g)
    noise = torch.randn(batch, h, a, generator=g)
    actions = torch.zeros(batch, h, a)
    actions[:, :, :14] = torch.randn(batch, h, 14, generator=g)
    flow_time = torch.rand(batch, generator=g) * 0.999 + 0.001
    inputs = Pi0Inputs(images, image_masks, tokens, token_masks, state).to(device)
    return inputs, noise.to(device), actions.to(device), flow_time.to(device)


def peer_args(inputs) -> Tuple[list, list, Any, Any, Any]:
    """Our batch in the peer's calling convention: one [B, 3, S, S] tensor and one [B] mask per camera."""
    n = inputs.images.shape[1]
    images = [inputs.images[:, i] for i in range(n)]
    masks = [inputs.image_masks[:, i] for i in range(n)]
    return images, masks, inputs.tokens, inputs.token_masks, inputs.state


# ----------------------------------------------------------------------------------- comparison
def _first_tensor(out: Any):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    return None


class Recorder:
    """Forward hooks on every named submodule; outputs kept per name in call order (on the CPU, fp32)."""

    def __init__(self, model, root_prefix: str = ""):
        self.calls: Dict[str, List[Any]] = defaultdict(list)
        self.handles = []
        for name, module in model.named_modules():
            if name:
                self.handles.append(module.register_forward_hook(self._hook(root_prefix + name)))

    def _hook(self, name: str) -> Callable:
        def hook(module, args, out):
            t = _first_tensor(out)
            if t is not None:
                self.calls[name].append(t.detach().float().cpu())
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _vision_to_peer_order(name: str, ours: List[Any], peer: List[Any], batch: int) -> List[Any]:
    """We run all cameras as one [B*N] batch (row-major: b, camera); the peer calls per camera."""
    import torch

    if len(ours) == 1 and len(peer) > 1 and ("vision_tower" in name or "multi_modal_projector" in name):
        t = ours[0]
        n = t.shape[0] // batch
        t = t.reshape(batch, n, *t.shape[1:]).transpose(0, 1)
        return list(torch.unbind(t, 0))
    return ours


def compare_traces(ours: Recorder, peer: Recorder, batch: int) -> List[Dict[str, Any]]:
    """Max abs / relative difference per module path that both models called the same number of times."""
    rows = []
    for name in sorted(set(ours.calls) & set(peer.calls)):
        a = _vision_to_peer_order(name, ours.calls[name], peer.calls[name], batch)
        b = peer.calls[name]
        if len(a) != len(b):
            rows.append({"module": name, "calls": (len(a), len(b)), "max_abs": None})
            continue
        worst, scale = 0.0, 0.0
        for x, y in zip(a, b, strict=True):
            if x.shape != y.shape:
                worst = float("inf")
                break
            worst = max(worst, float((x - y).abs().max()))
            scale = max(scale, float(y.abs().max()))
        rows.append({"module": name, "calls": len(a), "max_abs": worst, "max_ref": scale,
                     "rel": worst / scale if scale else worst})
    return rows


def max_abs(x, y) -> float:
    return float((x.float() - y.float()).abs().max())


def rel(x, y) -> float:
    return float((x.float() - y.float()).norm() / y.float().norm())


def run_equivalence(ours, peer, inputs, noise, actions, flow_time, steps: int, trace: bool) -> Dict[str, Any]:
    import torch

    res: Dict[str, Any] = {}
    images, img_masks, tokens, tok_masks, state = peer_args(inputs)
    b = inputs.state.shape[0]
    with torch.no_grad():
        # Prefix embeddings and masks.
        p_emb, p_pad, p_ar = peer.embed_prefix(images, img_masks, tokens, tok_masks)
        o_emb, o_pad, o_ar = ours.embed_prefix(inputs)
        res["prefix_embeddings_max_abs"] = max_abs(o_emb, p_emb)
        res["prefix_embeddings_max_ref"] = float(p_emb.float().abs().max())
        res["prefix_masks_equal"] = bool(torch.equal(o_pad, p_pad) and torch.equal(o_ar[None].expand_as(p_ar),
                                                                                  p_ar.bool()))

        # Sampling, with every denoise_step's (x_t, t, v) recorded on both sides.
        p_steps: List[Tuple[Any, Any, Any]] = []
        o_steps: List[Tuple[Any, Any, Any]] = []
        peer_step, our_step = peer.denoise_step, ours.denoise_step
        time_grid: Optional[List[Any]] = None  # when set, ours evaluates at the peer's times

        def peer_wrapped(**kw):
            v = peer_step(**kw)
            p_steps.append((kw["x_t"].clone(), kw["timestep"].clone(), v.clone()))
            return v

        def our_wrapped(x_t, t, cache):
            if time_grid is not None:
                t = time_grid[len(o_steps)].to(t.dtype).reshape(t.shape) if t.dim() else time_grid[len(o_steps)][0]
            v = our_step(x_t, t, cache)
            o_steps.append((x_t.clone(), t.clone(), v.clone()))
            return v

        peer.denoise_step = peer_wrapped
        ours.denoise_step = our_wrapped
        rec_o = rec_p = None
        try:
            rec_p = Recorder(peer) if trace else None
            p_act = peer.sample_actions(images, img_masks, tokens, tok_masks, state, noise=noise.clone(),
                                        num_steps=steps)
            if rec_p:
                rec_p.close()
            # (1) each implementation with its own time grid: what a user of each gets.
            o_act = ours.sample_actions(inputs, noise=noise.clone(), num_steps=steps)
            res["times_peer"] = [float(t[0]) for _, t, _ in p_steps]
            res["times_ours"] = [float(t.reshape(-1)[0]) for _, t, _ in o_steps]
            res["times_max_abs"] = max(abs(x - y) for x, y in zip(res["times_peer"], res["times_ours"],
                                                                  strict=True))
            res["actions_max_abs"] = max_abs(o_act, p_act)
            res["actions_rel"] = rel(o_act, p_act)
            res["actions_max_ref"] = float(p_act.float().abs().max())
            res["velocity_trajectory_max_abs"] = max(max_abs(o[2], p[2]) for o, p in zip(o_steps, p_steps,
                                                                                            strict=True))
            # (2) ours evaluated at the peer's exact times: isolates the network and the Euler loop.
            time_grid = [t for _, t, _ in p_steps]
            o_steps.clear()
            rec_o = Recorder(ours) if trace else None
            o_act_grid = ours.sample_actions(inputs, noise=noise.clone(), num_steps=steps)
            res["actions_same_times_max_abs"] = max_abs(o_act_grid, p_act)
            res["velocity_same_times_trajectory_max_abs"] = max(
                max_abs(o[2], p[2]) for o, p in zip(o_steps, p_steps, strict=True))
        finally:
            del peer.denoise_step, ours.denoise_step
            for r in (rec_o, rec_p):
                if r:
                    r.close()
        res["steps"] = len(p_steps)
        # (3) the same (x_t, t) as the peer at every step: the network alone.
        cache = ours.prefill(inputs)
        same = [max_abs(our_step(x, t, cache), v) for x, t, v in p_steps]
        res["velocity_same_input_max_abs_per_step"] = same
        res["velocity_same_input_max_abs"] = max(same)
        res["velocity_max_ref"] = max(float(v.float().abs().max()) for _, _, v in p_steps)
        if trace:
            rows = compare_traces(rec_o, rec_p, b)
            res["layers_compared"] = sum(1 for r in rows if r["max_abs"] is not None)
            res["layers_call_count_mismatch"] = [r["module"] for r in rows if r["max_abs"] is None]
            worst = max((r for r in rows if r["max_abs"] is not None), key=lambda r: r["rel"])
            res["layers_worst"] = worst
            res["layers"] = rows

        # Training path: the same noise, time and actions through one joint forward.
        p_loss = peer.forward(images, img_masks, tokens, tok_masks, state, actions, noise=noise, time=flow_time)
        o_loss = ours.compute_loss(inputs, actions, noise=noise, time=flow_time)
        res["loss_elementwise_max_abs"] = max_abs(o_loss, p_loss)
        res["loss_mean_peer"] = float(p_loss.mean())
        res["loss_mean_ours"] = float(o_loss.mean())
    return res


# ----------------------------------------------------------------------------------------- timing
def cuda_times(fn: Callable[[], Any], warmup: int, iters: int) -> Dict[str, float]:
    import numpy as np
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    a = np.asarray([cuda_event_ms(fn) for _ in range(iters)])
    return {"p50": float(np.median(a)), "min": float(a.min()), "p90": float(np.percentile(a, 90)), "n": len(a)}


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-venv", help="virtual environment holding lerobot + openpi's transformers")
    ap.add_argument("--peer-path", action="append", default=[], help="extra sys.path entry (repeatable)")
    ap.add_argument("--stub", default=DEFAULT_STUBS,
                    help="modules to stub when unusable (imported by LeRobot's dataset utils only)")
    ap.add_argument("--config", choices=("reduced", "full"), default="reduced")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--horizon", type=int, default=50)
    ap.add_argument("--prompt-len", type=int, default=48)
    ap.add_argument("--valid-tokens", default="20,48", help="valid prompt lengths per batch row (cycled)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-trace", action="store_true", help="skip the layer-by-layer hook comparison")
    ap.add_argument("--keep-weights", help="also keep the exported LeRobot safetensors file here")
    ap.add_argument("--in-memory", action="store_true",
                    help="hand the LeRobot-named state dict to our loader without the safetensors file")
    ap.add_argument("--bench", action="store_true", help="after the fp32 check: bf16 check and eager timing")
    ap.add_argument("--bench-batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    if args.peer_venv:
        _reexec_in_venv(args.peer_venv)
    for p in reversed(args.peer_path):
        sys.path.insert(0, p)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    stubbed = _install_stubs([s for s in args.stub.split(",") if s])
    _enable_patched_transformers()

    import torch

    from pi0_ros.model.checkpoint import load_weights, load_weights_file
    from pi0_ros.model.pi0 import Pi0Model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import lerobot
    import transformers

    result: Dict[str, Any] = {
        "peer": f"lerobot {lerobot.__version__ if hasattr(lerobot, '__version__') else '?'}"
                f" (lerobot.policies.pi0.modeling_pi0.PI0Pytorch), transformers {transformers.__version__}",
        "torch": torch.__version__, "python": sys.version.split()[0], "device": args.device,
        "config": args.config, "stubbed_modules": stubbed,
    }
    try:
        from importlib.metadata import version
        result["peer"] = (f"lerobot {version('lerobot')} (PI0Pytorch), "
                          f"transformers {transformers.__version__} (openpi's patched build)")
    except Exception:  # noqa: BLE001
        pass
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name()

    t0 = time.perf_counter()
    peer, _ = build_peer(args.config, args.horizon, args.prompt_len, args.steps, "float32", args.device)
    randomize_(peer, args.seed)
    cfg = our_config(args.config, args.horizon, args.prompt_len, args.steps)
    with torch.device(args.device):
        ours = Pi0Model(cfg)
    ours.eval()
    if args.in_memory:
        report = load_weights(ours, lerobot_state_dict(peer), strict=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.safetensors")
            export_lerobot_state_dict(peer, path)
            if args.keep_weights:
                import shutil
                shutil.copy(path, args.keep_weights)
            report = load_weights_file(ours, path, strict=True)
    result["load_report"] = {"stripped_prefix": report.stripped_prefix, "ignored": report.ignored,
                             "filled": report.filled, "ok": report.ok}
    result["params_peer"] = sum(p.numel() for p in peer.parameters())
    result["params_ours"] = sum(p.numel() for p in ours.parameters())
    result["setup_s"] = time.perf_counter() - t0

    valid = [int(x) for x in args.valid_tokens.split(",")]
    inputs, noise, actions, flow_time = make_inputs(cfg, args.batch, args.seed + 1, args.device, valid)
    t0 = time.perf_counter()
    result["fp32"] = run_equivalence(ours, peer, inputs, noise, actions, flow_time, args.steps,
                                     trace=not args.no_trace)
    result["fp32_s"] = time.perf_counter() - t0

    write(result, args.out)
    if args.bench:
        try:
            result["bf16"] = bench_bf16(ours, peer, args)
        except Exception as err:  # keep the fp32 results
            result["bf16"] = {"error": f"{type(err).__name__}: {err}"[:2000]}
        write(result, args.out)
    summarize(result)


def write(result: Dict[str, Any], path: Optional[str]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


def bench_bf16(ours, peer, args) -> Dict[str, Any]:
    """bf16 on both sides (each with its own dtype policy), outputs vs each other, then eager latency."""
    import torch

    out: Dict[str, Any] = {}
    sd = dict(peer.state_dict())  # references to the fp32 tensors (the conversion below replaces them)
    cfg = ours.config
    inputs, noise, _, _ = make_inputs(cfg, args.bench_batch, args.seed + 2, args.device, [args.prompt_len])
    images, img_masks, tokens, tok_masks, state = peer_args(inputs)
    with torch.no_grad():
        ref = ours.sample_actions(inputs, noise=noise.clone(), num_steps=args.steps)
        # LeRobot's PI0Config(dtype="bfloat16") policy, then the fp32 values reloaded as a checkpoint load does.
        peer.paligemma_with_expert.to_bfloat16_for_selected_params("bfloat16")
        peer.load_state_dict(sd)
        del sd
        ours.set_inference_dtype(torch.bfloat16)
        ours.set_attention_impl("sdpa")  # our eager GPU mode (bench/pi0_gpu.py "eager")

        def run_peer():
            return peer.sample_actions(images, img_masks, tokens, tok_masks, state, noise=noise.clone(),
                                       num_steps=args.steps)

        def run_ours():
            return ours.sample_actions(inputs, noise=noise.clone(), num_steps=args.steps)

        p_act, o_act = run_peer(), run_ours()
        out["actions_max_abs_ours_vs_peer"] = max_abs(o_act, p_act)
        out["actions_rel_ours_vs_peer"] = rel(o_act, p_act)
        out["actions_rel_ours_vs_fp32"] = rel(o_act, ref)
        out["actions_rel_peer_vs_fp32"] = rel(p_act, ref)
        if args.device.startswith("cuda"):
            out["peer_eager_ms"] = cuda_times(run_peer, args.warmup, args.iters)
            out["ours_eager_ms"] = cuda_times(run_ours, args.warmup, args.iters)
            out["ratio_peer_over_ours_p50"] = out["peer_eager_ms"]["p50"] / out["ours_eager_ms"]["p50"]
            try:
                graph, _ = capture_graph(run_ours)
                out["ours_cuda_graph_ms"] = cuda_times(graph.replay, args.warmup, args.iters)
                out["ratio_peer_over_ours_graph_p50"] = (out["peer_eager_ms"]["p50"]
                                                         / out["ours_cuda_graph_ms"]["p50"])
            except Exception as err:  # noqa: BLE001 - optional figure
                out["ours_cuda_graph_ms"] = {"error": f"{type(err).__name__}: {err}"[:500]}
            out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out["workload"] = (f"batch {args.bench_batch}, {cfg.num_cameras} cameras {cfg.image_size}px, "
                       f"{args.prompt_len}-token prompt (all valid), H={cfg.action_horizon}, {args.steps} steps")
    return out


def summarize(r: Dict[str, Any]) -> None:
    f = r["fp32"]
    print(f"peer: {r['peer']}; torch {r['torch']}; device {r['device']}; config {r['config']}; "
          f"stubbed {r['stubbed_modules'] or 'none'}")
    print(f"params: peer {r['params_peer']:,}, ours {r['params_ours']:,}; load {r['load_report']}")
    print(f"fp32 prefix embeddings  max|d| {f['prefix_embeddings_max_abs']:.3e} (max|x| "
          f"{f['prefix_embeddings_max_ref']:.3g}); masks equal: {f['prefix_masks_equal']}")
    print(f"fp32 velocity, same x_t,t max|d| {f['velocity_same_input_max_abs']:.3e}; along own trajectories "
          f"{f['velocity_trajectory_max_abs']:.3e} (max|v| {f['velocity_max_ref']:.3g})")
    print(f"fp32 flow times max|d| {f['times_max_abs']:.3e} over {f['steps']} steps; at the peer's times: actions "
          f"max|d| {f['actions_same_times_max_abs']:.3e}, velocities {f['velocity_same_times_trajectory_max_abs']:.3e}")
    print(f"fp32 ACTIONS max|d| {f['actions_max_abs']:.3e}  rel {f['actions_rel']:.3e} "
          f"(max|a| {f['actions_max_ref']:.3g})")
    print(f"fp32 loss elementwise max|d| {f['loss_elementwise_max_abs']:.3e} "
          f"(mean peer {f['loss_mean_peer']:.6f}, ours {f['loss_mean_ours']:.6f})")
    if "layers_worst" in f:
        w = f["layers_worst"]
        print(f"layers compared {f['layers_compared']}, call-count mismatches {f['layers_call_count_mismatch']}; "
              f"worst rel {w['rel']:.3e} at {w['module']} (max|d| {w['max_abs']:.3e})")
    if "bf16" in r and "error" in r["bf16"]:
        print(f"bf16 part failed: {r['bf16']['error']}")
    elif "bf16" in r:
        b = r["bf16"]
        print(f"bf16 actions ours vs peer max|d| {b['actions_max_abs_ours_vs_peer']:.3e} rel "
              f"{b['actions_rel_ours_vs_peer']:.3e}; vs fp32: ours {b['actions_rel_ours_vs_fp32']:.3e}, "
              f"peer {b['actions_rel_peer_vs_fp32']:.3e}")
        if "peer_eager_ms" in b:
            print(f"latency ({b['workload']}): peer eager p50 {b['peer_eager_ms']['p50']:.1f} ms, ours eager "
                  f"p50 {b['ours_eager_ms']['p50']:.1f} ms, ratio {b['ratio_peer_over_ours_p50']:.2f}x; "
                  f"peak {b['peak_gpu_mem_gib']:.1f} GiB")
            g = b.get("ours_cuda_graph_ms", {})
            if "p50" in g:
                print(f"ours in one CUDA graph p50 {g['p50']:.1f} ms, ratio {b['ratio_peer_over_ours_graph_p50']:.1f}x")
            else:
                print(f"ours CUDA graph: {g}")


if __name__ == "__main__":
    main()
