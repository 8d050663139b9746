"""CUDA timing helpers shared by the GPU bench scripts (torch is imported on use: pi0_peer_compare re-executes
itself in another environment before it imports torch)."""

from __future__ import annotations

from typing import Any, Callable


def cuda_event_ms(fn: Callable[[], Any]) -> float:
    """Milliseconds one call of ``fn`` takes on the current CUDA stream (device events)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def capture_graph(fn: Callable[[], Any], warmup: int = 2):
    """Warm up on a side stream, then capture ``fn`` in one CUDA graph (static inputs and outputs); (graph, output)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out
