"""pi0-serve against openpi's own client, hostile clients, API keys and concurrent clients."""

from __future__ import annotations

import gc
import http.client
import inspect
import logging
import threading
import time
import tracemalloc
from typing import Any, Dict, List

import msgpack
import numpy as np
import pytest
import websockets
import websockets.sync.client as ws_client
from openpi_client import msgpack_numpy as openpi_codec
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from pi0_ros.policy_api import PolicyInputError
from pi0_ros.serving import loader as policy_loader
from pi0_ros.serving import server as server_module
from pi0_ros.serving.echo_policy import EchoPolicy
from pi0_ros.serving.server import PolicyServer, ServerConfig

# openpi_client 0.1.2 connects without a context manager, which websockets 17 flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

TIMEOUT_S = 10.0
HORIZON = 4


class ScriptedPolicy(EchoPolicy):
    """Echo, except where the prompt asks for a failure; counts overlapping infer() calls."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self._count_lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.calls = 0

    def infer(self, observation: Dict[str, Any]) -> Dict[str, Any]:
        with self._count_lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            prompt = observation.get("prompt")
            if prompt == "raise":
                raise RuntimeError("scripted failure")
            result = super().infer(observation)
            if prompt == "nan":
                result["actions"][1, 0] = np.nan
            if prompt == "no actions":
                del result["actions"]
            return result
        finally:
            with self._count_lock:
                self.active -= 1


def _observation(state: Any, prompt: str = "pick up the cup") -> Dict[str, Any]:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    return {
        "images": {"head": image, "left_wrist": image, "right_wrist": image},
        "state": np.asarray(state, dtype=np.float32),
        "prompt": prompt,
    }


def _raw_connect(port: int, **kwargs: Any) -> ws_client.ClientConnection:
    if "legacy" in inspect.signature(ws_client.connect).parameters:
        kwargs["legacy"] = True  # websockets >= 17; the robot's Python 3.10 tops out at websockets 16
    return ws_client.connect(
        f"ws://127.0.0.1:{port}", open_timeout=TIMEOUT_S, close_timeout=2, compression=None,
        max_size=None, proxy=None, **kwargs,
    )


def _start(policy: Any = None, **config: Any) -> server_module.ServerThread:
    return PolicyServer(policy or ScriptedPolicy(horizon=HORIZON), ServerConfig(port=0, **config)).start_in_thread()


@pytest.fixture
def policy():
    return ScriptedPolicy(horizon=HORIZON)


@pytest.fixture
def served(policy):
    with _start(policy) as thread:
        yield thread


def _expect_error_then_close(port: int, frame: Any) -> str:
    """Send one frame on a fresh connection; the reply must be a text error, then a 1011 close."""
    with _raw_connect(port) as connection:
        metadata = openpi_codec.unpackb(connection.recv(timeout=TIMEOUT_S))
        assert isinstance(metadata, dict)
        connection.send(frame)
        reply = connection.recv(timeout=TIMEOUT_S)
        assert isinstance(reply, str), f"expected an error text frame for {frame[:40]!r}"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            connection.recv(timeout=TIMEOUT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        return reply


def _assert_serves(port: int, state: Any = (1.0, 2.0, 3.0)) -> None:
    client = WebsocketClientPolicy("127.0.0.1", port)
    try:
        reply = client.infer(_observation(state))
        np.testing.assert_array_equal(reply["actions"], np.tile(np.asarray(state, np.float32), (HORIZON, 1)))
    finally:
        client._ws.close()


# -- openpi's client ---------------------------------------------------------------------------


def test_openpi_client_gets_metadata_first(served, policy):
    client = WebsocketClientPolicy("127.0.0.1", served.port)
    try:
        assert client.get_server_metadata() == policy.metadata
    finally:
        client._ws.close()


def test_openpi_client_inference_reply_shape_and_timing(served):
    client = WebsocketClientPolicy("127.0.0.1", served.port)
    try:
        for step in range(3):
            state = np.array([step, -1.5, 0.25, 7.0], dtype=np.float32)
            reply = client.infer(_observation(state))
            assert reply["actions"].shape == (HORIZON, 4) and reply["actions"].dtype == np.float32
            np.testing.assert_array_equal(reply["actions"][-1], state)
            assert reply["policy_timing"]["infer_ms"] >= 0
            assert set(reply["server_timing"]) >= {"infer_ms", "decode_ms", "queue_ms"}
            # From the second request on, the previous request's full server-side time is reported.
            assert ("prev_total_ms" in reply["server_timing"]) == (step > 0)
    finally:
        client._ws.close()


@pytest.mark.parametrize(
    "observation, message",
    [
        ({"images": {}, "prompt": "no state"}, "lacks 'state'"),
        (_observation([0.0, np.nan]), "NaN"),
        (_observation([0.0, np.inf]), "NaN or infinite"),
        (_observation([1.0], prompt="raise"), "scripted failure"),
        (_observation([1.0], prompt="nan"), "NaN"),
        (_observation([1.0], prompt="no actions"), "'actions'"),
    ],
    ids=["missing key", "nan state", "inf state", "policy raises", "nan actions", "no actions"],
)
def test_openpi_client_error_path(served, observation, message):
    client = WebsocketClientPolicy("127.0.0.1", served.port)
    try:
        with pytest.raises(RuntimeError, match="Error in inference server") as error:
            client.infer(observation)
        assert message in str(error.value) and "Traceback" in str(error.value)
    finally:
        client._ws.close()
    _assert_serves(served.port)


def test_required_keys_are_checked_before_the_policy(policy):
    with _start(policy, required_keys=("state", "prompt")) as thread:
        observation = _observation([1.0])
        del observation["prompt"]
        reply = _expect_error_then_close(thread.port, openpi_codec.packb(observation))
        assert "prompt" in reply
        assert policy.calls == 0


# -- health, keys, limits ------------------------------------------------------------------------


def _get(port: int, path: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_healthz_even_with_api_key():
    with _start(api_key="s3cret") as thread:
        assert _get(thread.port, "/healthz") == (200, b"OK\n")


def test_api_key_accepted():
    with _start(api_key="s3cret") as thread:
        client = WebsocketClientPolicy("127.0.0.1", thread.port, api_key="s3cret")
        try:
            np.testing.assert_array_equal(client.infer(_observation([4.0]))["actions"][0], [4.0])
        finally:
            client._ws.close()


@pytest.mark.parametrize("headers", [None, {"Authorization": "Api-Key wrong"}, {"Authorization": "s3cret"}])
def test_api_key_refused_before_websocket_opens(policy, headers):
    with _start(policy, api_key="s3cret") as thread:
        with pytest.raises(websockets.InvalidStatus) as refused:
            _raw_connect(thread.port, additional_headers=headers)
        assert refused.value.response.status_code == 401
        assert policy.calls == 0


def test_oversized_frame_closes_connection_with_1009(policy):
    with _start(policy, max_message_bytes=64 * 1024) as thread:
        with _raw_connect(thread.port) as connection:
            connection.recv(timeout=TIMEOUT_S)
            connection.send(openpi_codec.packb(_observation(np.zeros(40_000))))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                connection.recv(timeout=TIMEOUT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert policy.calls == 0
        _assert_serves(thread.port)


def test_connection_limit_refuses_surplus_clients():
    with _start(max_connections=1) as thread:
        first = _raw_connect(thread.port)
        first.recv(timeout=TIMEOUT_S)
        with pytest.raises(websockets.InvalidStatus) as refused:
            _raw_connect(thread.port)
        assert refused.value.response.status_code == 503
        first.close()
        deadline = time.monotonic() + TIMEOUT_S
        while True:  # the slot frees once the server has noticed the close
            try:
                _assert_serves(thread.port)
                break
            except websockets.InvalidStatus:
                assert time.monotonic() < deadline, "slot never freed"
                time.sleep(0.05)


# -- hostile frames ------------------------------------------------------------------------------


def _ndarray(data: Any, dtype: Any, shape: Any) -> Dict[bytes, Any]:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


HOSTILE_FRAMES = {
    "text frame": "hello",
    "json text": '{"state": [1, 2]}',
    "empty": b"",
    "not msgpack": b"\xc1\xc1\xc1",
    "top-level list": msgpack.packb([1, 2, 3]),
    "top-level ndarray": openpi_codec.packb(np.zeros(3)),
    "state wrong type": msgpack.packb({"state": "fast please"}),
    "state 2-D": openpi_codec.packb({"state": np.zeros((2, 2), np.float32)}),
    "object dtype": msgpack.packb({"state": _ndarray(b"\0" * 8, "|O", [1])}),
    "complex dtype": msgpack.packb({"state": _ndarray(b"\0" * 8, "<c8", [1])}),
    "huge shape": msgpack.packb({"state": _ndarray(b"\0" * 8, "<f4", [2**40])}),
    "short data": msgpack.packb({"state": _ndarray(b"\0" * 7, "<f4", [2])}),
    "deep nesting": b"\x81\xa1a" * 3000 + b"\xc0",
    "nesting past our limit": msgpack.packb({"state": [[[[[[[[[[[1.0]]]]]]]]]]]}),
    "byte keys": msgpack.packb({b"state": 1}),
    "nan scalar": msgpack.packb({"state": float("nan")}),
    "extension type": b"\x81\xa5state\xd4\x05\x00",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FRAMES))
def test_hostile_frame_gets_error_and_server_keeps_serving(served, policy, name):
    reply = _expect_error_then_close(served.port, HOSTILE_FRAMES[name])
    assert "Error" in reply or "error" in reply
    _assert_serves(served.port)


def _random_value(rng: np.random.Generator, depth: int) -> Any:
    kind = int(rng.integers(0, 10 if depth < 4 else 6))
    if kind == 0:
        return int(rng.integers(-(2**62), 2**62))
    if kind == 1:
        return float(rng.choice([0.5, -1e308, np.nan, np.inf, 3.0]))
    if kind == 2:
        return rng.bytes(int(rng.integers(0, 16)))
    if kind == 3:
        return "".join(chr(int(c)) for c in rng.integers(32, 0x2FF, size=int(rng.integers(0, 8))))
    if kind == 4:
        return None
    if kind == 5:
        return bool(rng.integers(0, 2))
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    if kind == 7:  # an ndarray header with random, usually inconsistent fields
        return {
            b"__ndarray__": True,
            b"data": rng.bytes(int(rng.integers(0, 32))),
            b"dtype": str(rng.choice(["<f4", "|u1", "|O", "<c16", "|V8", "<f8", "garbage", "<i2"])),
            b"shape": [int(d) for d in rng.integers(-3, 2**33, size=int(rng.integers(0, 4)))],
        }
    key_pool = ["state", "images", "prompt", "x", "actions"]
    return {
        str(rng.choice(key_pool)) if rng.random() < 0.8 else rng.bytes(3): _random_value(rng, depth + 1)
        for _ in range(int(rng.integers(0, 4)))
    }


def test_fuzzed_frames_never_break_the_server(served, policy):
    rng = np.random.default_rng(1234)
    for _ in range(40):  # raw random bytes
        _expect_error_then_close(served.port, rng.bytes(int(rng.integers(1, 200))))
    for _ in range(60):  # random msgpack structures, none of them a valid observation
        value = _random_value(rng, 0)
        if isinstance(value, dict):
            value.pop("state", None)
        _expect_error_then_close(served.port, msgpack.packb(value, use_bin_type=True))
    _assert_serves(served.port)


def test_hostile_frames_do_not_leak_memory(served):
    # pytest keeps every captured log record; silence the per-request warnings so they do not count.
    server_logger = logging.getLogger("pi0_ros.serving.server")
    level = server_logger.level
    server_logger.setLevel(logging.ERROR)
    try:
        _measure_hostile_frame_memory(served)
    finally:
        server_logger.setLevel(level)


def _measure_hostile_frame_memory(served):
    frames = [HOSTILE_FRAMES[name] for name in sorted(HOSTILE_FRAMES)]
    frames.append(openpi_codec.packb({"images": {"head": np.zeros((224, 224, 3), np.uint8)}, "state": "bad"}))

    def one_round() -> None:
        for frame in frames:
            _expect_error_then_close(served.port, frame)

    one_round()  # warm-up: lazy imports, logging handlers, caches
    tracemalloc.start()
    try:
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(5):
            one_round()
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 90 rejected requests, ~0.15 MB each for the image frames: a leak would keep megabytes.
    assert after - before < 1 * 2**20


# -- several clients -----------------------------------------------------------------------------


def test_concurrent_clients_get_their_own_replies_and_inference_is_serialized():
    policy = ScriptedPolicy(horizon=HORIZON, delay_s=0.002)
    clients, requests = 5, 12
    failures: List[str] = []
    with _start(policy) as thread:

        def run_client(client_id: int) -> None:
            try:
                client = WebsocketClientPolicy("127.0.0.1", thread.port)
                try:
                    for step in range(requests):
                        state = np.array([client_id, step, client_id * 100 + step], dtype=np.float32)
                        actions = client.infer(_observation(state))["actions"]
                        if not np.array_equal(actions, np.tile(state, (HORIZON, 1))):
                            failures.append(f"client {client_id} step {step} got {actions[0]}")
                finally:
                    client._ws.close()
            except Exception as exc:  # reported below; a thread cannot fail the test itself
                failures.append(f"client {client_id}: {exc!r}")

        threads = [threading.Thread(target=run_client, args=(i,)) for i in range(clients)]
        for worker in threads:
            worker.start()
        for worker in threads:
            worker.join(timeout=60)
        assert not any(worker.is_alive() for worker in threads), "a client hung"
    assert failures == []
    assert policy.calls == clients * requests
    assert policy.max_active == 1


def test_requests_of_clients_that_gave_up_are_dropped_not_run():
    # Clients that time out and reconnect must not find their abandoned requests run ahead of the new one.
    policy = ScriptedPolicy(horizon=HORIZON, delay_s=1.0)
    with _start(policy) as thread:
        with _raw_connect(thread.port) as running:
            running.recv(timeout=TIMEOUT_S)
            running.send(openpi_codec.packb(_observation([1.0])))  # on the worker for 1 s
            for state in (2.0, 3.0, 4.0):
                with _raw_connect(thread.port) as impatient:
                    impatient.recv(timeout=TIMEOUT_S)
                    impatient.send(openpi_codec.packb(_observation([state])))
                    time.sleep(0.1)  # queued behind the running request, then the client leaves
            reply = openpi_codec.unpackb(running.recv(timeout=TIMEOUT_S))
            np.testing.assert_array_equal(reply["actions"][:, 0], [1.0] * HORIZON)
        _assert_serves(thread.port, state=(5.0,))
    assert policy.calls == 2  # the running request and the new client's; the three abandoned ones never ran


def test_sequential_clients(served, policy):
    for client_id in range(4):
        _assert_serves(served.port, state=[client_id, -client_id])
    assert policy.calls == 4


# -- command line --------------------------------------------------------------------------------


def test_cli_requires_a_policy_source():
    with pytest.raises(SystemExit) as exit_info:
        server_module.main([])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("loader", ["no_such_module_xyz:make", "pi0_ros.serving.echo_policy:NoSuchThing", "nocolon"])
def test_cli_reports_unresolvable_loader(loader):
    assert server_module.main(["--loader", loader, "--port", "0"]) == 2


def test_metadata_must_be_encodable():
    with pytest.raises(TypeError):
        PolicyServer(EchoPolicy(), metadata={"bad": object()})


def test_policy_input_error_is_the_echo_contract():
    # The trivial policy the other tests lean on really refuses what they rely on it refusing.
    with pytest.raises(PolicyInputError):
        EchoPolicy().infer({"state": np.zeros((2, 2))})


# -- policy loading ------------------------------------------------------------------------------


def fake_checkpoint_loader(checkpoint_dir: str, horizon: int = 2) -> EchoPolicy:
    """Stands in for Pi0Policy.from_checkpoint: records what it was called with."""
    policy = EchoPolicy(horizon=horizon)
    policy.loaded_from = checkpoint_dir
    return policy


def not_a_policy() -> object:
    return object()


def test_loader_passes_checkpoint_dir_first_and_kwargs():
    policy = policy_loader.load_policy(
        f"{__name__}:fake_checkpoint_loader", checkpoint_dir="/ckpt/x", loader_kwargs={"horizon": 7}
    )
    assert policy.loaded_from == "/ckpt/x" and policy.metadata["action_horizon"] == 7


def test_loader_without_checkpoint_calls_with_kwargs_only():
    policy = policy_loader.load_policy("pi0_ros.serving.echo_policy:EchoPolicy", loader_kwargs={"horizon": 5})
    assert policy.metadata["action_horizon"] == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loader": f"{__name__}:not_a_policy"}, "lacks metadata"),
        ({"loader": f"{__name__}:fake_checkpoint_loader"}, "failed"),  # missing checkpoint_dir argument
        ({"checkpoint_dir": "/x", "policy_type": "pi1"}, "policy_type must be one of"),
        ({}, "checkpoint directory"),
    ],
)
def test_loader_errors_are_policy_load_errors(kwargs, message):
    with pytest.raises(policy_loader.PolicyLoadError, match=message):
        policy_loader.load_policy(**kwargs)
