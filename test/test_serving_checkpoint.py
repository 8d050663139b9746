"""pi0-serve with a real (tiny, random-weight) pi0 checkpoint, queried by openpi's client and ours."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from openpi_client.websocket_client_policy import WebsocketClientPolicy  # noqa: E402

from pi0_ros.serving.remote_policy import RemotePolicy, RemotePolicyConfig  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_DIM = 16

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "pi0_tiny"
    made = _run(["pi0_ros.model.make_checkpoint", "--config", "pi0_tiny", "--out", str(out),
                 "--state-dim", str(STATE_DIM), "--action-dim", str(STATE_DIM)])
    assert made.returncode == 0, made.stderr
    return out


def test_pi0_serve_checkpoint_end_to_end(tiny_checkpoint, tmp_path):
    port = _free_port()
    log = (tmp_path / "server.log").open("w+")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "pi0_ros.serving.server", "--checkpoint", str(tiny_checkpoint),
         "--policy-type", "pi0", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
                time.sleep(0.2)
        image = np.zeros((224, 224, 3), dtype=np.uint8)
        observation = {
            "images": {"head": image, "left_wrist": image, "right_wrist": image},
            "state": np.linspace(-1, 1, STATE_DIM, dtype=np.float32),
            "prompt": "pick up the cup",
        }
        client = WebsocketClientPolicy("127.0.0.1", port)
        try:
            metadata = client.get_server_metadata()
            assert metadata["model_type"] == "pi0" and metadata["action_dim"] == STATE_DIM
            reply = client.infer(observation)
            assert reply["actions"].shape == (metadata["action_horizon"], STATE_DIM)
            assert np.isfinite(reply["actions"]).all() and reply["server_timing"]["infer_ms"] > 0
            with pytest.raises(RuntimeError, match="PolicyInputError"):
                client.infer({**observation, "state": np.zeros(STATE_DIM + 1, np.float32)})
        finally:
            client._ws.close()
        with RemotePolicy(RemotePolicyConfig(port=port, reply_timeout_s=120)) as remote:
            result = remote.infer(observation)
            assert result["actions"].shape == (metadata["action_horizon"], STATE_DIM)
            assert result["policy_timing"]["server_infer_ms"] > 0
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.mark.parametrize("policy_type", ["pi0", "pi0_fast"])
def test_every_default_checkpoint_loader_resolves(policy_type):
    # pi0-serve --policy-type T uses CHECKPOINT_LOADERS[T]; a wrong path only shows when a user serves T.
    from pi0_ros.serving.loader import CHECKPOINT_LOADERS, resolve_callable

    factory = resolve_callable(CHECKPOINT_LOADERS[policy_type])
    assert callable(factory) and factory.__qualname__.endswith("from_checkpoint")
