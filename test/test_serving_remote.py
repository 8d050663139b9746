"""RemotePolicy against a minimal openpi-protocol server and against pi0-serve (killed and restarted)."""

from __future__ import annotations

import http
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
import websockets
import websockets.sync.server as ws_sync_server
from openpi_client import msgpack_numpy as openpi_codec

from pi0_ros.policy_api import PolicyInputError, PolicyOutputError
from pi0_ros.serving.echo_policy import EchoPolicy
from pi0_ros.serving.remote_policy import (
    PolicyServerError,
    PolicyServerRefused,
    PolicyServerUnavailable,
    RemotePolicy,
    RemotePolicyConfig,
)
from pi0_ros.serving.server import PolicyServer, ServerConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 10.0
HORIZON = 3
SERVER_INFER_MS = 12.5


class MinimalOpenpiServer:
    """openpi's protocol in a few lines, built only on openpi_client's codec and websockets.

    ``mode`` decides the reply: "ok" (actions = state repeated), "silent" (never answers),
    "error" (traceback text, then close, like openpi), "nan" (non-finite actions).
    """

    def __init__(self, mode: str = "ok", port: int = 0, api_key: Optional[str] = None) -> None:
        self.mode = mode
        self.state_key = "state"
        self.received: List[Dict[str, Any]] = []
        self.connections = 0

        def process_request(connection: Any, request: Any) -> Any:
            if api_key is not None and request.headers.get("Authorization") != f"Api-Key {api_key}":
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            return None

        self._server = ws_sync_server.serve(
            self._handle, "127.0.0.1", port, compression=None, max_size=None, process_request=process_request
        )
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, connection: Any) -> None:
        self.connections += 1
        connection.send(openpi_codec.packb({"action_horizon": HORIZON}))
        for message in connection:
            observation = openpi_codec.unpackb(message)
            self.received.append(observation)
            if self.mode == "silent":
                continue
            if self.mode == "error":
                connection.send("Traceback (most recent call last):\nKeyError: 'boom'")
                connection.close(1011)
                return
            state = np.asarray(observation[self.state_key])
            actions = np.tile(state, (HORIZON, 1))
            if self.mode == "nan":
                actions[0, 0] = np.nan
            connection.send(openpi_codec.packb({
                "actions": actions,
                "policy_timing": {"infer_ms": SERVER_INFER_MS},
                "server_timing": {"infer_ms": SERVER_INFER_MS},
            }))

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(TIMEOUT_S)


@pytest.fixture
def minimal_server():
    server = MinimalOpenpiServer()
    yield server
    server.stop()


def _images(height: int = 24, width: int = 32) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        name: rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        for name in ("head", "left_wrist", "right_wrist")
    }


def _observation(state: Any = (0.5, -1.0, 2.0), images: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Any]:
    return {
        "images": _images() if images is None else images,
        "state": np.asarray(state, dtype=np.float32),
        "prompt": "fold the towel",
    }


def _remote(port: int, **overrides: Any) -> RemotePolicy:
    settings: Dict[str, Any] = dict(port=port, connect_timeout_s=TIMEOUT_S, reply_timeout_s=TIMEOUT_S)
    settings.update(overrides)
    return RemotePolicy(RemotePolicyConfig(**settings))


# -- key mapping ------------------------------------------------------------------------------


def test_openpi_aloha_mapping_sends_chw_images_under_server_keys(minimal_server):
    images = _images()
    config = RemotePolicyConfig.openpi_aloha(port=minimal_server.port, extra={"robot": "r1pro"})
    with RemotePolicy(config) as policy:
        result = policy.infer(_observation(images=images))
    sent = minimal_server.received[0]
    assert set(sent) == {"images", "state", "prompt", "robot"}
    assert set(sent["images"]) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    np.testing.assert_array_equal(sent["images"]["cam_high"], images["head"].transpose(2, 0, 1))
    np.testing.assert_array_equal(sent["images"]["cam_right_wrist"], images["right_wrist"].transpose(2, 0, 1))
    assert sent["state"].dtype == np.float32 and sent["prompt"] == "fold the towel" and sent["robot"] == "r1pro"
    np.testing.assert_array_equal(result["actions"], np.tile(np.float32([0.5, -1.0, 2.0]), (HORIZON, 1)))


def test_flat_droid_style_keys_in_hwc(minimal_server):
    images = _images()
    config = RemotePolicyConfig(
        port=minimal_server.port,
        camera_keys={"head": "observation/exterior_image_1_left", "left_wrist": "observation/wrist_image_left"},
        images_key=None,
        state_key="observation/joint_position",
        prompt_key="task",
    )
    minimal_server.state_key = "observation/joint_position"
    with RemotePolicy(config) as policy:
        policy.infer(_observation(images=images))
    sent = minimal_server.received[0]
    assert set(sent) == {
        "observation/exterior_image_1_left", "observation/wrist_image_left", "observation/joint_position", "task",
    }
    np.testing.assert_array_equal(sent["observation/wrist_image_left"], images["left_wrist"])


@pytest.mark.parametrize("action, expected", [("omit", None), ("zeros", "zeros"), ("error", PolicyInputError)])
def test_missing_camera_handling(minimal_server, action, expected):
    images = _images()
    del images["left_wrist"]
    config = RemotePolicyConfig.openpi_aloha(port=minimal_server.port, missing_camera=action)
    with RemotePolicy(config) as policy:
        if expected is PolicyInputError:
            with pytest.raises(PolicyInputError, match="left_wrist"):
                policy.infer(_observation(images=images))
            assert minimal_server.connections == 0
            return
        policy.infer(_observation(images=images))
    sent_images = minimal_server.received[0]["images"]
    if expected is None:
        assert "cam_left_wrist" not in sent_images
    else:
        assert sent_images["cam_left_wrist"].shape == (3, 24, 32) and not sent_images["cam_left_wrist"].any()


@pytest.mark.parametrize(
    "observation",
    [
        {"images": _images(), "prompt": "x"},
        _observation(state=[0.0, np.nan]),
        _observation(state=[[1.0, 2.0]]),
        _observation(images={"head": np.zeros((8, 8, 4), np.uint8)}),
        _observation(images={"head": np.zeros((8, 8, 3), np.float32)}),
        {"images": "head", "state": np.zeros(2, np.float32)},
        "not a dict",
    ],
    ids=["no state", "nan state", "2-D state", "4 channels", "float image", "images not a dict", "not a dict"],
)
def test_bad_observations_fail_locally_without_network(minimal_server, observation):
    with _remote(minimal_server.port) as policy:
        with pytest.raises(PolicyInputError):
            policy.infer(observation)
    assert minimal_server.connections == 0


def test_config_refuses_unknown_settings():
    with pytest.raises(ValueError):
        RemotePolicyConfig(image_layout="WHC")
    with pytest.raises(ValueError):
        RemotePolicyConfig(missing_camera="guess")
    with pytest.raises(ValueError):
        RemotePolicyConfig(backoff_initial_s=5.0, backoff_max_s=1.0)
    with pytest.raises(ValueError):
        RemotePolicyConfig(extra={"robot": object()})


# -- timing, metadata, server errors ----------------------------------------------------------


def test_metadata_and_timing_are_reported(minimal_server):
    with _remote(minimal_server.port) as policy:
        assert policy.metadata == {"action_horizon": HORIZON}
        timing = policy.infer(_observation())["policy_timing"]
    assert timing["server_infer_ms"] == SERVER_INFER_MS
    assert timing["roundtrip_ms"] >= 0 and timing["infer_ms"] >= timing["roundtrip_ms"]
    assert timing["transport_ms"] == pytest.approx(timing["roundtrip_ms"] - SERVER_INFER_MS)


def test_server_error_text_raises_and_next_call_reconnects(minimal_server):
    minimal_server.mode = "error"
    with _remote(minimal_server.port) as policy:
        with pytest.raises(PolicyServerError, match="KeyError: 'boom'"):
            policy.infer(_observation())
        minimal_server.mode = "ok"
        np.testing.assert_array_equal(policy.infer(_observation(state=[7.0]))["actions"][:, 0], [7.0] * HORIZON)
    assert minimal_server.connections == 2


def test_non_finite_actions_from_server_are_refused(minimal_server):
    minimal_server.mode = "nan"
    with _remote(minimal_server.port) as policy:
        with pytest.raises(PolicyOutputError, match="NaN"):
            policy.infer(_observation())


def test_reply_timeout_raises_unavailable_then_fails_fast_inside_backoff(minimal_server):
    minimal_server.mode = "silent"
    with _remote(minimal_server.port, reply_timeout_s=0.3, backoff_initial_s=30.0, backoff_max_s=60.0) as policy:
        with pytest.raises(PolicyServerUnavailable, match="no reply") as first:
            policy.infer(_observation())
        assert isinstance(first.value.__cause__, TimeoutError)
        assert not policy.connected
        with pytest.raises(PolicyServerUnavailable, match="next attempt"):
            policy.infer(_observation())
    assert minimal_server.connections == 1  # the second call did not even try to connect


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_server_backs_off_exponentially_then_recovers():
    port = _free_port()
    with _remote(port, connect_timeout_s=2.0, backoff_initial_s=0.5, backoff_max_s=5.0) as policy:
        with pytest.raises(PolicyServerUnavailable, match="cannot connect"):
            policy.infer(_observation())
        assert 0 < policy.next_retry_in_s <= 0.5
        time.sleep(policy.next_retry_in_s)
        with pytest.raises(PolicyServerUnavailable, match="cannot connect"):
            policy.infer(_observation())
        assert policy.next_retry_in_s > 0.5  # the window doubled
        server = MinimalOpenpiServer(port=port)
        try:
            with pytest.raises(PolicyServerUnavailable, match="next attempt"):
                policy.infer(_observation())
            assert server.connections == 0
            time.sleep(policy.next_retry_in_s)
            np.testing.assert_array_equal(policy.infer(_observation(state=[3.0]))["actions"][:, 0], [3.0] * HORIZON)
        finally:
            server.stop()


def test_api_key_against_pi0_serve():
    served = PolicyServer(EchoPolicy(horizon=HORIZON), ServerConfig(port=0, api_key="k3y")).start_in_thread()
    try:
        with _remote(served.port, api_key="k3y") as policy:
            assert policy.infer(_observation())["actions"].shape == (HORIZON, 3)
        with _remote(served.port, api_key="wrong") as policy:
            with pytest.raises(PolicyServerRefused, match="401"):
                policy.infer(_observation())
        with _remote(served.port) as policy:
            with pytest.raises(PolicyServerRefused, match="401"):
                policy.connect()
    finally:
        served.stop()


def test_default_config_talks_to_pi0_serve_with_our_observation_layout():
    policy_under_test = EchoPolicy(horizon=HORIZON, action_dim=5)
    served = PolicyServer(policy_under_test, ServerConfig(port=0)).start_in_thread()
    try:
        with _remote(served.port) as policy:
            assert policy.metadata == policy_under_test.metadata
            result = policy.infer(_observation(state=[1.0, 2.0, 3.0]))
        np.testing.assert_array_equal(result["actions"][0], [1.0, 2.0, 3.0, 0.0, 0.0])
        assert result["policy_timing"]["server_infer_ms"] >= 0
    finally:
        served.stop()


# -- pi0-serve killed mid-request and restarted -----------------------------------------------


def _spawn_pi0_serve(port: int, delay_s: float, log: Any) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    command = [
        sys.executable, "-m", "pi0_ros.serving.server",
        "--loader", "pi0_ros.serving.echo_policy:EchoPolicy",
        "--loader-kwargs", json.dumps({"horizon": HORIZON, "delay_s": delay_s}),
        "--port", str(port), "--log-level", "WARNING",
    ]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.seek(0)
            raise AssertionError(f"pi0-serve did not come up:\n{log.read().decode(errors='replace')}")
        time.sleep(0.1)


def test_server_killed_mid_request_then_restarted(tmp_path):
    port = _free_port()
    processes: List[subprocess.Popen] = []
    with tempfile.TemporaryFile() as log, _remote(port, reply_timeout_s=60.0, backoff_initial_s=0.2) as policy:
        try:
            processes.append(_spawn_pi0_serve(port, delay_s=0.5, log=log))
            assert policy.infer(_observation(state=[1.0]))["actions"].shape == (HORIZON, 1)

            outcome: Dict[str, BaseException] = {}

            def call() -> None:
                try:
                    policy.infer(_observation(state=[2.0]))
                except BaseException as exc:  # inspected below
                    outcome["error"] = exc

            caller = threading.Thread(target=call)
            caller.start()
            time.sleep(0.2)  # the request is now inside the server's 0.5 s inference
            processes[0].kill()
            caller.join(TIMEOUT_S)
            assert not caller.is_alive(), "infer() kept waiting on a dead server"
            error = outcome.get("error")
            assert isinstance(error, PolicyServerUnavailable), error
            # Detected as a lost connection, not by running into the 60 s reply timeout.
            assert isinstance(error.__cause__, (websockets.ConnectionClosed, OSError))
            assert not isinstance(error.__cause__, TimeoutError)

            processes.append(_spawn_pi0_serve(port, delay_s=0.0, log=log))
            deadline = time.monotonic() + 30
            while True:
                try:
                    result = policy.infer(_observation(state=[4.0, 5.0]))
                    break
                except PolicyServerUnavailable:
                    assert time.monotonic() < deadline, "never reconnected"
                    time.sleep(0.05)
            np.testing.assert_array_equal(result["actions"], np.tile(np.float32([4.0, 5.0]), (HORIZON, 1)))
        finally:
            for process in processes:
                process.kill()
                process.wait(TIMEOUT_S)


def test_stalled_server_cannot_block_sending_a_large_request():
    port = _free_port()
    with tempfile.TemporaryFile() as log, _remote(port, reply_timeout_s=1.0, backoff_initial_s=0.1) as policy:
        process = _spawn_pi0_serve(port, delay_s=0.0, log=log)
        try:
            policy.connect()
            # Alive but not reading (hung process): ~8 MB of images outgrow the socket buffers, so send() blocks.
            os.kill(process.pid, signal.SIGSTOP)
            outcome: Dict[str, BaseException] = {}

            def call() -> None:
                try:
                    policy.infer(_observation(images=_images(720, 1280)))
                except BaseException as exc:  # inspected below
                    outcome["error"] = exc

            caller = threading.Thread(target=call, daemon=True)
            caller.start()
            caller.join(30)
            assert not caller.is_alive(), "infer() kept sending to a stalled server"
            error = outcome.get("error")
            assert isinstance(error, PolicyServerUnavailable) and "no reply within 1.0 s" in str(error), error
            assert not policy.connected

            os.kill(process.pid, signal.SIGCONT)
            time.sleep(policy.next_retry_in_s)
            np.testing.assert_array_equal(policy.infer(_observation(state=[6.0]))["actions"][:, 0], [6.0] * HORIZON)
        finally:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait(TIMEOUT_S)


def test_rtc_request_is_forwarded_only_when_configured(minimal_server):
    prev = np.zeros((20, 3), np.float32)
    observation = {**_observation(), "rtc": {"prev_actions": prev, "delay_steps": 4, "execute_steps": 25}}
    with RemotePolicy(RemotePolicyConfig(port=minimal_server.port)) as policy:
        policy.infer(observation)
    assert "rtc" not in minimal_server.received[-1]
    with RemotePolicy(RemotePolicyConfig(port=minimal_server.port, rtc_key="rtc")) as policy:
        policy.infer(observation)
        sent = minimal_server.received[-1]["rtc"]
        np.testing.assert_array_equal(sent["prev_actions"], prev)
        assert sent["delay_steps"] == 4 and sent["execute_steps"] == 25
        bad = {**observation, "rtc": {"prev_actions": np.full((2, 3), np.nan, np.float32)}}
        with pytest.raises(PolicyInputError, match="rtc"):
            policy.infer(bad)
