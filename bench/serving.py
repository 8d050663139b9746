"""Loopback cost of off-board inference: serialization + transport, with a model-free policy.

Starts ``pi0-serve`` (EchoPolicy, no delay) as a separate process on 127.0.0.1 and sends
openpi-style observations (3 x 224x224x3 uint8 images, a float32 state, a prompt) from
``RemotePolicy`` and from openpi's own ``WebsocketClientPolicy``. Reports:

* codec: encode + decode of one observation, in process, ours and openpi_client's;
* overhead per request: client wall time of one ``infer`` minus the server's ``infer_ms``
  (i.e. encode, send, server decode/checks/encode, receive, decode), p50/p99;
* throughput: requests/s of one sequential client, and of N client processes at once.

Usage: ``tools/loopback_only.sh .venv/bin/python bench/serving.py [--requests 1000] [--clients 4]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from openpi_client import msgpack_numpy as openpi_codec  # noqa: E402
from openpi_client.websocket_client_policy import WebsocketClientPolicy  # noqa: E402

from pi0_ros.serving import msgpack_numpy as our_codec  # noqa: E402
from pi0_ros.serving.remote_policy import RemotePolicy, RemotePolicyConfig  # noqa: E402

CAMERAS = ("head", "left_wrist", "right_wrist")


def observation(state_dim: int, seed: int = 0) -> Dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "images": {name: rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8) for name in CAMERAS},
        "state": rng.standard_normal(state_dim).astype(np.float32),
        "prompt": "pick up the red cup and put it in the sink",
    }


def stats(samples_ms: List[float]) -> Dict[str, float]:
    values = np.asarray(samples_ms)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
        "n": int(values.size),
    }


def bench_codec(obs: Dict[str, Any], repeats: int) -> Dict[str, Dict[str, float]]:
    results = {}
    for name, pack, unpack in (
        ("ours", our_codec.packb, our_codec.unpackb),
        ("openpi_client", openpi_codec.packb, openpi_codec.unpackb),
    ):
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            unpack(pack(obs))
            samples.append((time.perf_counter() - start) * 1e3)
        results[name] = stats(samples)
    return results


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, horizon: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "pi0_ros.serving.server",
        "--loader", "pi0_ros.serving.echo_policy:EchoPolicy",
        "--loader-kwargs", json.dumps({"horizon": horizon}),
        "--port", str(port), "--log-level", "WARNING",
    ]
    process = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def bench_remote_policy(port: int, obs: Dict[str, Any], warmup: int, requests: int) -> Dict[str, Any]:
    with RemotePolicy(RemotePolicyConfig(port=port)) as policy:
        for _ in range(warmup):
            policy.infer(obs)
        total, overhead, server = [], [], []
        start = time.perf_counter()
        for _ in range(requests):
            timing = policy.infer(obs)["policy_timing"]
            total.append(timing["infer_ms"])
            server.append(timing["server_infer_ms"])
            overhead.append(timing["infer_ms"] - timing["server_infer_ms"])
        elapsed = time.perf_counter() - start
    return {
        "client_infer": stats(total),
        "overhead": stats(overhead),
        "server_infer": stats(server),
        "requests_per_s": requests / elapsed,
    }


def bench_openpi_client(port: int, obs: Dict[str, Any], warmup: int, requests: int) -> Dict[str, Any]:
    client = WebsocketClientPolicy("127.0.0.1", port)
    try:
        for _ in range(warmup):
            client.infer(obs)
        total, overhead = [], []
        for _ in range(requests):
            start = time.perf_counter()
            reply = client.infer(obs)
            wall_ms = (time.perf_counter() - start) * 1e3
            total.append(wall_ms)
            overhead.append(wall_ms - reply["server_timing"]["infer_ms"])
    finally:
        client._ws.close()
    return {"client_infer": stats(total), "overhead": stats(overhead)}


def _client_process(port: int, state_dim: int, seed: int, duration_s: float, queue: Any) -> None:
    obs = observation(state_dim, seed)
    count = 0
    with RemotePolicy(RemotePolicyConfig(port=port)) as policy:
        for _ in range(10):
            policy.infer(obs)
        deadline = time.perf_counter() + duration_s
        while time.perf_counter() < deadline:
            policy.infer(obs)
            count += 1
    queue.put(count)


def bench_concurrent(port: int, state_dim: int, clients: int, duration_s: float) -> Dict[str, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_client_process, args=(port, state_dim, seed, duration_s, queue))
        for seed in range(clients)
    ]
    for worker in workers:
        worker.start()
    counts = [queue.get(timeout=duration_s + 60) for _ in workers]
    for worker in workers:
        worker.join(30)
    return {"clients": clients, "requests_per_s": sum(counts) / duration_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--state-dim", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the concurrent run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    obs = observation(args.state_dim)
    payload_bytes = len(our_codec.packb(obs))
    results: Dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start": os.getloadavg(),
        "payload_bytes": payload_bytes,
        "codec": bench_codec(obs, args.requests),
    }
    port = free_port()
    server = start_server(port, args.horizon)
    try:
        results["remote_policy"] = bench_remote_policy(port, obs, args.warmup, args.requests)
        results["openpi_client"] = bench_openpi_client(port, obs, args.warmup, args.requests)
        results["concurrent"] = bench_concurrent(port, args.state_dim, args.clients, args.duration)
    finally:
        server.terminate()
        server.wait(10)

    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
