"""Triton kernels for pi0's denoising steps on CUDA (GPU-only; the torch code in ``gemma`` stays the
reference and the CPU / autograd path).

Both kernels serve the action expert's suffix (1 state + H action tokens, 51 rows for H = 50), where
the work is small and cuBLAS / cuDNN leave most of an H100 idle:

* ``suffix_attention``: multi-query attention of the suffix queries (the G query heads of one K/V head
  folded into G*L query rows: 8 * 51 = 408 for pi0) over the cached prefix K/V followed by the
  suffix's own K/V, split over the keys (flash-decoding). Each program takes a block of query rows
  and a slice of the keys and writes its partial output with its running max and sum; a second
  kernel merges the slices with log-sum-exp weights and writes ``[B, L, H*D]``, the layout o_proj
  reads. No per-layer concatenation of prefix and suffix K/V, no fp32 copies of q/k, no logits in
  memory.
* ``skinny_linear``: ``x [M, K] @ w[N, K]^T`` for few rows, split over K so that enough programs
  stream the weight; the fp32 partial sums ``[SPLIT, M, N]`` are added by torch (under
  torch.compile Inductor fuses that sum into the consumer). ``tune_linear`` times it against cuBLAS
  (F.linear) on the device and keeps cuBLAS where that is faster.

Numerics follow the reference up to bf16 rounding: fp32 logits with the same masked fill value,
softmax in fp32, probabilities rounded to bf16 before the product with V, fp32 accumulation.

Both are registered as torch custom ops (``torch.ops.pi0.*``) so torch.compile treats them as opaque
calls (no graph breaks). Their CPU implementations are plain torch math of the same function (used by
the CPU tests); Triton is imported only when a CUDA kernel is launched or tuned.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

# Must equal gemma.ATTENTION_MASK_VALUE (kept here so this module does not import gemma).
MASK_FILL = -2.3819763e38

# (block_m, block_n, split_len, num_warps, num_stages) of the split-K attention; tune_attention sets it.
AttentionConfig = Tuple[int, int, int, int, int]
DEFAULT_ATTENTION_CONFIG: AttentionConfig = (64, 64, 64, 8, 2)  # fastest on the H100 (BENCHMARKS.md)
ATTENTION_CONFIG: AttentionConfig = DEFAULT_ATTENTION_CONFIG

# (block_m, block_n, block_k, split, num_warps, num_stages) of the skinny GEMM.
LinearConfig = Tuple[int, int, int, int, int, int]

_KERNELS: Dict[str, Callable] = {}


def triton_available() -> bool:
    """True where the Triton kernels can run: a CUDA device and an importable triton."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------ Triton kernels
def _kernels() -> Dict[str, Callable]:
    """Define the @triton.jit kernels on first use (triton is imported here only)."""
    if _KERNELS:
        return _KERNELS
    import triton
    import triton.language as tl

    @triton.jit
    def attn_partial_kernel(
        q_ptr, kp_ptr, vp_ptr, ks_ptr, vs_ptr, mask_ptr, po_ptr, pm_ptr, pl_ptr,
        R, L, P, G, KVH, n_splits, split_len,
        sq_b, sq_h, sq_l, sq_d,
        skp_b, skp_h, skp_s, skp_d,
        svp_b, svp_h, svp_s, svp_d,
        sks_b, sks_h, sks_s, sks_d,
        svs_b, svs_h, svs_s, svs_d,
        sm_b, sm_l, sm_s,
        D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FILL: tl.constexpr,
    ):
        # Splits 0 .. n_splits-2 cover the cached prefix (split_len keys each), the last split the
        # suffix's own L keys: each program reads ONE tensor with plain (tail-masked) loads.
        pid_m = tl.program_id(0)
        pid_s = tl.program_id(1)
        pid_bh = tl.program_id(2)
        b = pid_bh // KVH
        kvh = pid_bh % KVH
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < R
        rows_c = tl.minimum(rows, R - 1)  # clamped: every load address is valid
        g = rows_c // L
        lq = rows_c % L
        d = tl.arange(0, D)
        rn = tl.arange(0, BLOCK_N)
        q = tl.load(q_ptr + b * sq_b + (kvh * G + g)[:, None] * sq_h + lq[:, None] * sq_l + d[None, :] * sq_d)
        zero = pid_s * 0
        if pid_s < n_splits - 1:
            lo = pid_s * split_len
            hi = tl.minimum(lo + split_len, P)
            col_off = zero
            k_ptrs = kp_ptr + b * skp_b + kvh * skp_h + (lo + rn)[:, None] * skp_s + d[None, :] * skp_d
            v_ptrs = vp_ptr + b * svp_b + kvh * svp_h + (lo + rn)[:, None] * svp_s + d[None, :] * svp_d
            k_step = zero + BLOCK_N * skp_s
            v_step = zero + BLOCK_N * svp_s
        else:
            lo = zero
            hi = zero + L
            col_off = zero + P
            k_ptrs = ks_ptr + b * sks_b + kvh * sks_h + rn[:, None] * sks_s + d[None, :] * sks_d
            v_ptrs = vs_ptr + b * svs_b + kvh * svs_h + rn[:, None] * svs_s + d[None, :] * svs_d
            k_step = zero + BLOCK_N * sks_s
            v_step = zero + BLOCK_N * svs_s
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
        m_ptrs = mask_ptr + b * sm_b + lq[:, None] * sm_l + (col_off + lo + rn)[None, :] * sm_s
        for n0 in range(lo, hi, BLOCK_N):
            col_ok = n0 + rn < hi
            k = tl.load(k_ptrs, mask=col_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=col_ok[:, None], other=0.0)
            allowed = tl.load(m_ptrs, mask=col_ok[None, :], other=0)
            logits = tl.dot(q, tl.trans(k))  # [BLOCK_M, BLOCK_N] fp32
            logits = tl.where(allowed != 0, logits, FILL)
            logits = tl.where(col_ok[None, :], logits, float("-inf"))  # past the slice: no weight at all
            m_new = tl.maximum(m_i, tl.max(logits, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(logits - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
            k_ptrs += k_step
            v_ptrs += v_step
            m_ptrs += BLOCK_N * sm_s
        base = pid_bh * n_splits + pid_s
        tl.store(po_ptr + (base * R + rows)[:, None] * D + d[None, :], acc, mask=row_ok[:, None])
        tl.store(pm_ptr + base * R + rows, m_i, mask=row_ok)
        tl.store(pl_ptr + base * R + rows, l_i, mask=row_ok)

    @triton.jit
    def attn_combine_kernel(
        po_ptr, pm_ptr, pl_ptr, out_ptr,
        R, L, G, KVH, n_splits,
        so_b, so_l, so_h, so_d,
        D: tl.constexpr, BLOCK_R: tl.constexpr, SPLITS: tl.constexpr,
    ):
        pid_r = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // KVH
        kvh = pid_bh % KVH
        rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < R
        rows_c = tl.minimum(rows, R - 1)
        sp = tl.arange(0, SPLITS)
        sp_ok = sp < n_splits
        idx = (pid_bh * n_splits + sp)[:, None] * R + rows_c[None, :]  # [SPLITS, BLOCK_R]
        m = tl.load(pm_ptr + idx, mask=sp_ok[:, None], other=float("-inf"))
        lsum = tl.load(pl_ptr + idx, mask=sp_ok[:, None], other=0.0)
        m_max = tl.max(m, 0)
        denom = tl.sum(tl.exp(m - m_max[None, :]) * lsum, 0)
        d = tl.arange(0, D)
        acc = tl.zeros([BLOCK_R, D], dtype=tl.float32)
        for s in range(0, n_splits):
            base = (pid_bh * n_splits + s) * R
            ms = tl.load(pm_ptr + base + rows_c)
            o = tl.load(po_ptr + (base + rows_c)[:, None] * D + d[None, :])
            acc += tl.exp(ms - m_max)[:, None] * o
        out = acc / denom[:, None]
        g = rows_c // L
        lq = rows_c % L
        tl.store(out_ptr + b * so_b + lq[:, None] * so_l + (kvh * G + g)[:, None] * so_h + d[None, :] * so_d,
                 out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])

    @triton.jit
    def skinny_mm_kernel(
        x_ptr, w_ptr, p_ptr, M, N, K, k_per_split,
        sx_m, sx_k, sw_n, sw_k,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN: tl.constexpr,
    ):
        pid_mn = tl.program_id(0)
        pid_s = tl.program_id(1)
        n_blocks = tl.cdiv(N, BLOCK_N)
        pid_m = pid_mn // n_blocks
        pid_n = pid_mn % n_blocks
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        m_ok = rm < M
        n_ok = rn < N
        rm_c = tl.minimum(rm, M - 1)
        rn_c = tl.minimum(rn, N - 1)
        k0 = pid_s * k_per_split
        k_end = tl.minimum(k0 + k_per_split, K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for kk in range(k0, k_end, BLOCK_K):
            ks = kk + rk
            if EVEN:
                x = tl.load(x_ptr + rm_c[:, None] * sx_m + ks[None, :] * sx_k)
                w = tl.load(w_ptr + rn_c[:, None] * sw_n + ks[None, :] * sw_k)
            else:
                k_ok = ks < k_end
                x = tl.load(x_ptr + rm_c[:, None] * sx_m + ks[None, :] * sx_k, mask=k_ok[None, :], other=0.0)
                w = tl.load(w_ptr + rn_c[:, None] * sw_n + ks[None, :] * sw_k, mask=k_ok[None, :], other=0.0)
            acc += tl.dot(x, tl.trans(w))
        out = p_ptr + pid_s * M * N + rm[:, None] * N + rn[None, :]
        tl.store(out, acc, mask=m_ok[:, None] & n_ok[None, :])

    _KERNELS.update(attn_partial=attn_partial_kernel, attn_combine=attn_combine_kernel,
                    skinny_mm=skinny_mm_kernel, cdiv=triton.cdiv, next_pow2=triton.next_power_of_2)
    return _KERNELS


def attention_triton(q: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor, k_suffix: torch.Tensor,
                     v_suffix: torch.Tensor, mask: torch.Tensor,
                     config: Optional[AttentionConfig] = None) -> torch.Tensor:
    """Launch the two attention kernels (any device Triton runs on, incl. its CPU interpreter).

    q [B, H, L, D] (scaled, rotated); k/v_prefix [B, KV, P, D]; k/v_suffix [B, KV, L, D]; mask
    uint8/bool [B, L, P+L] (nonzero = may attend). Returns [B, L, H*D] in q's dtype.
    """
    kern = _kernels()
    block_m, block_n, split_len, num_warps, num_stages = config or ATTENTION_CONFIG
    b, h, length, d = q.shape
    kvh, p = k_prefix.shape[1], k_prefix.shape[2]
    groups = h // kvh
    rows = groups * length
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)
    split_len = max(block_n, split_len // block_n * block_n)
    n_splits = kern["cdiv"](p, split_len) + 1  # prefix slices + the suffix
    po = torch.empty((b * kvh, n_splits, rows, d), dtype=torch.float32, device=q.device)
    pm = torch.empty((b * kvh, n_splits, rows), dtype=torch.float32, device=q.device)
    pl = torch.empty_like(pm)
    out = torch.empty((b, length, h, d), dtype=q.dtype, device=q.device)
    grid = (kern["cdiv"](rows, block_m), n_splits, b * kvh)
    kern["attn_partial"][grid](
        q, k_prefix, v_prefix, k_suffix, v_suffix, mask, po, pm, pl,
        rows, length, p, groups, kvh, n_splits, split_len,
        *q.stride(), *k_prefix.stride(), *v_prefix.stride(), *k_suffix.stride(), *v_suffix.stride(),
        *mask.stride(),
        D=d, BLOCK_M=block_m, BLOCK_N=block_n, FILL=MASK_FILL, num_warps=num_warps, num_stages=num_stages,
    )
    block_r = 8
    kern["attn_combine"][(kern["cdiv"](rows, block_r), b * kvh)](
        po, pm, pl, out, rows, length, groups, kvh, n_splits, *out.stride(),
        D=d, BLOCK_R=block_r, SPLITS=max(2, kern["next_pow2"](n_splits)), num_warps=4,
    )
    return out.view(b, length, h * d)


def attention_reference(q: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor, k_suffix: torch.Tensor,
                        v_suffix: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The same function in plain torch (gemma.attention's eager math): [B, L, H*D] in q's dtype."""
    b, h, length, d = q.shape
    k = torch.cat([k_prefix.to(q.dtype), k_suffix], dim=2)
    v = torch.cat([v_prefix.to(q.dtype), v_suffix], dim=2)
    kvh = k.shape[1]
    groups = h // kvh
    qg = q.reshape(b, kvh, groups * length, d)
    logits = torch.einsum("bkqd,bksd->bkqs", qg.float(), k.float())
    allowed = mask.bool()[:, None, None]  # [B, 1, 1, L, S]
    logits = logits.view(b, kvh, groups, length, -1).masked_fill(~allowed, MASK_FILL)
    probs = torch.softmax(logits, dim=-1).view(b, kvh, groups * length, -1)
    out = torch.einsum("bkqs,bksd->bkqd", probs.to(v.dtype), v).reshape(b, h, length, d)
    return out.transpose(1, 2).reshape(b, length, h * d)


@torch.library.custom_op("pi0::suffix_attention", mutates_args=())
def suffix_attention(q: torch.Tensor, k_prefix: torch.Tensor, v_prefix: torch.Tensor, k_suffix: torch.Tensor,
                     v_suffix: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Suffix attention over cached prefix + own K/V -> [B, L, H*D] (see ``attention_triton``)."""
    return attention_reference(q, k_prefix, v_prefix, k_suffix, v_suffix, mask)


@suffix_attention.register_kernel("cuda")
def _suffix_attention_cuda(q, k_prefix, v_prefix, k_suffix, v_suffix, mask):
    return attention_triton(q, k_prefix, v_prefix, k_suffix, v_suffix, mask)


@suffix_attention.register_fake
def _suffix_attention_fake(q, k_prefix, v_prefix, k_suffix, v_suffix, mask):
    b, h, length, d = q.shape
    return q.new_empty((b, length, h * d))


# ------------------------------------------------------------------------------------ skinny GEMM
def _split_plan(k: int, block_k: int, split: int) -> Tuple[int, int]:
    """(k_per_split, split) with k_per_split a multiple of block_k and no empty split."""
    per = math.ceil(math.ceil(k / max(1, split)) / block_k) * block_k
    return per, math.ceil(k / per)


def linear_partials_triton(x: torch.Tensor, w: torch.Tensor, config: LinearConfig) -> torch.Tensor:
    """x [M, K] @ w [N, K]^T as fp32 partial sums over K slices: [SPLIT, M, N]."""
    kern = _kernels()
    block_m, block_n, block_k, split, num_warps, num_stages = config
    m, k = x.shape
    n = w.shape[0]
    per, split = _split_plan(k, block_k, split)
    out = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
    even = k % per == 0 and per % block_k == 0
    grid = (kern["cdiv"](m, block_m) * kern["cdiv"](n, block_n), split)
    kern["skinny_mm"][grid](x, w, out, m, n, k, per, *x.stride(), *w.stride(),
                            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, EVEN=even,
                            num_warps=num_warps, num_stages=num_stages)
    return out


@torch.library.custom_op("pi0::linear_partials", mutates_args=())
def linear_partials(x: torch.Tensor, w: torch.Tensor, block_m: int, block_n: int, block_k: int, split: int,
                    num_warps: int, num_stages: int) -> torch.Tensor:
    """fp32 partial products over K slices [SPLIT, M, N] of x [M, K] @ w [N, K]^T (sum them over dim 0)."""
    per, split = _split_plan(x.shape[1], block_k, split)
    parts = [x[:, i * per:(i + 1) * per].float() @ w[:, i * per:(i + 1) * per].float().t() for i in range(split)]
    return torch.stack(parts)


@linear_partials.register_kernel("cuda")
def _linear_partials_cuda(x, w, block_m, block_n, block_k, split, num_warps, num_stages):
    return linear_partials_triton(x, w, (block_m, block_n, block_k, split, num_warps, num_stages))


@linear_partials.register_fake
def _linear_partials_fake(x, w, block_m, block_n, block_k, split, num_warps, num_stages):
    _, split = _split_plan(x.shape[1], block_k, split)
    return x.new_empty((split, x.shape[0], w.shape[0]), dtype=torch.float32)


def skinny_linear(x: torch.Tensor, w: torch.Tensor, config: LinearConfig) -> torch.Tensor:
    """F.linear(x, w) (no bias) through ``linear_partials``; x [..., K] -> [..., N] in x's dtype."""
    lead = x.shape[:-1]
    parts = torch.ops.pi0.linear_partials(x.reshape(-1, x.shape[-1]), w, *config)
    return parts.sum(0).to(x.dtype).view(*lead, w.shape[0])


# ---------------------------------------------------------------------------------------- tuning
def _graph_time_us(fns: Sequence[Callable[[], object]], reps: int = 5) -> float:
    """Median time of one call, from replays of a CUDA graph that calls each of ``fns`` once (so
    launch gaps do not count); use distinct buffers per fn to keep the data out of L2."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for fn in fns:
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fns:
            fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(fns))
    return sorted(times)[len(times) // 2]


LINEAR_CANDIDATES: Tuple[Tuple[int, int, int, int], ...] = (
    # (block_n, block_k, num_warps, num_stages); block_m = 64 (one wgmma row tile) for M <= 64
    (64, 128, 4, 4), (32, 128, 4, 4), (128, 128, 8, 3), (64, 256, 4, 3), (32, 256, 4, 3),
)


def tune_linear(m: int, n: int, k: int, dtype: torch.dtype = torch.bfloat16, device: str = "cuda",
                log: Optional[List[str]] = None) -> Optional[LinearConfig]:
    """Fastest of cuBLAS (returns None) and the skinny-GEMM candidates for x [m, k] @ w [n, k]^T,
    timed on the device with ~256 MB of rotating weights (HBM, not L2), after a correctness check."""
    copies = max(2, math.ceil(256e6 / (n * k * 2)))
    ws = [torch.randn(n, k, device=device, dtype=dtype) * 0.02 for _ in range(copies)]
    x = torch.randn(m, k, device=device, dtype=dtype)
    ref = (x.float() @ ws[0].float().t())
    best_t = _graph_time_us([lambda w=w: torch.nn.functional.linear(x, w) for w in ws])
    best: Optional[LinearConfig] = None
    lines = [f"linear {m}x{k} @ {k}x{n}: cublas {best_t:.1f} us"]
    block_m = 64 if m <= 64 else 128
    tiles_mn = math.ceil(m / block_m)
    for block_n, block_k, warps, stages in LINEAR_CANDIDATES:
        tiles = tiles_mn * math.ceil(n / block_n)
        base = max(1, round(264 / tiles))
        for split in sorted({min(k // block_k, max(1, s)) for s in (base // 2, base, base * 2)}):
            cfg = (block_m, block_n, block_k, split, warps, stages)
            try:
                out = skinny_linear(x, ws[0], cfg).float()
                err = float((out - ref).norm() / ref.norm())
                if not err < 1e-2:
                    lines.append(f"  {cfg}: relerr {err:.1e} REJECTED")
                    continue
                t = _graph_time_us([lambda w=w, c=cfg: skinny_linear(x, w, c) for w in ws])
            except Exception as exc:  # a config the compiler or the chip refuses
                lines.append(f"  {cfg}: failed {type(exc).__name__}: {str(exc)[:120]}")
                continue
            lines.append(f"  {cfg}: {t:.1f} us relerr {err:.1e}")
            if t < best_t * 0.97:
                best_t, best = t, cfg
    lines.append(f"  -> {best or 'cublas'} {best_t:.1f} us")
    if log is not None:
        log.extend(lines)
    return best


ATTENTION_CANDIDATES: Tuple[AttentionConfig, ...] = (
    (64, 64, 64, 8, 2), (64, 64, 64, 4, 2), (64, 32, 64, 8, 2), (64, 64, 128, 8, 2), (32, 64, 64, 4, 2),
    (32, 32, 64, 4, 2), (16, 64, 64, 4, 2),
)


def tune_attention(batch: int, heads: int, kv_heads: int, length: int, prefix: int, head_dim: int,
                   dtype: torch.dtype = torch.bfloat16, device: str = "cuda",
                   log: Optional[List[str]] = None) -> AttentionConfig:
    """Pick the fastest checked ATTENTION_CANDIDATES entry for this shape and make it the default."""
    global ATTENTION_CONFIG
    sets = []
    for _ in range(8):
        q = torch.randn(batch, heads, length, head_dim, device=device, dtype=dtype) * head_dim ** -0.5
        kp, vp = (torch.randn(batch, kv_heads, prefix, head_dim, device=device, dtype=dtype) for _ in range(2))
        ks, vs = (torch.randn(batch, kv_heads, length, head_dim, device=device, dtype=dtype) for _ in range(2))
        mask = torch.rand(batch, length, prefix + length, device=device) > 0.2
        mask[..., prefix] = True  # no fully masked row
        sets.append((q, kp, vp, ks, vs, mask.to(torch.uint8)))
    ref = attention_reference(*sets[0]).float()
    lines = [f"attention B{batch} H{heads} KV{kv_heads} L{length} P{prefix} D{head_dim}:"]
    lines.append(f"  torch eager {_graph_time_us([lambda s=s: attention_reference(*s) for s in sets]):.1f} us")
    best, best_t = DEFAULT_ATTENTION_CONFIG, float("inf")
    for cfg in ATTENTION_CANDIDATES:
        try:
            out = attention_triton(*sets[0], config=cfg).float()
            err = float((out - ref).norm() / ref.norm())
            if not err < 1e-2:
                lines.append(f"  {cfg}: relerr {err:.1e} REJECTED")
                continue
            t = _graph_time_us([lambda s=s, c=cfg: attention_triton(*s, config=c) for s in sets])
        except Exception as exc:
            lines.append(f"  {cfg}: failed {type(exc).__name__}: {str(exc)[:120]}")
            continue
        lines.append(f"  {cfg}: {t:.1f} us relerr {err:.1e}")
        if t < best_t:
            best, best_t = cfg, t
    if best_t == float("inf"):
        raise RuntimeError("no suffix-attention kernel configuration ran: " + " | ".join(lines))
    lines.append(f"  -> {best} {best_t:.1f} us")
    ATTENTION_CONFIG = best
    if log is not None:
        log.extend(lines)
    return best
