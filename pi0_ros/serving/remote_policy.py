"""A ``Policy`` that runs on a remote openpi-protocol server (``pi0-serve`` or openpi's ``serve_policy.py``).

It is called from the policy node's worker thread, so it uses the synchronous websockets client.
Every way the server can be unreachable (refused, timed out on connect or on a request, closed
mid-request) raises ``PolicyServerUnavailable``, a ``RuntimeError`` the node's safety layer turns
into a hold. After a failure the next connection attempt waits for an exponentially growing
backoff window; calls inside the window fail at once instead of blocking the control loop.

Observation keys are translated by ``RemotePolicyConfig``: which server key each of our cameras
goes to (nested under ``images_key`` or at the top level), HWC or CHW, the state and prompt
keys, and constant extra entries. ``RemotePolicyConfig.openpi_aloha()`` fills these in for
openpi's ALOHA servers.
"""

from __future__ import annotations

import dataclasses
import inspect
import socket
import threading
import time
from typing import Any, Dict, Optional

import numpy as np
import websockets
import websockets.sync.client as ws_client

from pi0_ros.policy_api import Observation, PolicyInputError, PolicyOutputError, PolicyResult
from pi0_ros.serving.msgpack_numpy import CodecLimits, DecodeError, packb, unpackb
from pi0_ros.serving.validation import check_state

IMAGE_LAYOUTS = ("HWC", "CHW")
MISSING_CAMERA_ACTIONS = ("omit", "zeros", "error")


class PolicyServerUnavailable(RuntimeError):
    """The policy server cannot be reached now (refused, timed out, connection lost, backing off)."""


class PolicyServerRefused(PolicyServerUnavailable):
    """The server answered the handshake with an HTTP error (for example 401: wrong API key)."""


class PolicyServerError(RuntimeError):
    """The server was reached but failed this request; the message carries its traceback."""


@dataclasses.dataclass(frozen=True)
class RemotePolicyConfig:
    """Where the server is, how our observation maps onto its keys, and how patient to be."""

    host: str = "127.0.0.1"
    port: int = 8000
    uri: Optional[str] = None  # overrides host/port, e.g. "wss://gpu-box:8443/"
    api_key: Optional[str] = None
    # Our camera name -> server image key (a camera not named here is not sent: a server that takes fewer
    # cameras than the robot has); empty: our names, unchanged.
    camera_keys: Dict[str, str] = dataclasses.field(default_factory=dict)
    images_key: Optional[str] = "images"  # None: image keys at the top level of the request
    image_layout: str = "HWC"
    missing_camera: str = "omit"  # a mapped camera absent from the observation: omit / zeros / error
    state_key: str = "state"
    prompt_key: Optional[str] = "prompt"
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)  # constant entries added to each request
    # Forward observation["rtc"] (real-time chunking request) under this key; None drops it. Only pi0_ros
    # servers act on it; openpi servers ignore unknown keys.
    rtc_key: Optional[str] = None
    actions_key: str = "actions"
    connect_timeout_s: float = 5.0
    reply_timeout_s: float = 10.0  # the whole request: sending the observation and waiting for the reply
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_message_bytes: int = 8 * 2**20
    ping_interval_s: Optional[float] = 5.0
    ping_timeout_s: Optional[float] = 10.0

    def __post_init__(self) -> None:
        """Refuse settings that would fail only later, on the robot."""
        if self.image_layout not in IMAGE_LAYOUTS:
            raise ValueError(f"image_layout must be one of {IMAGE_LAYOUTS}, got {self.image_layout!r}")
        if self.missing_camera not in MISSING_CAMERA_ACTIONS:
            raise ValueError(f"missing_camera must be one of {MISSING_CAMERA_ACTIONS}, got {self.missing_camera!r}")
        if min(self.connect_timeout_s, self.reply_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        try:
            packb(self.extra)
        except TypeError as exc:
            raise ValueError(f"extra entries must be msgpack-encodable: {exc}") from exc

    @property
    def server_uri(self) -> str:
        """The websocket URI to connect to."""
        return self.uri or f"ws://{self.host}:{self.port}"

    @classmethod
    def openpi_aloha(cls, **overrides: Any) -> "RemotePolicyConfig":
        """Keys of openpi's ALOHA policies: images {cam_high, cam_left_wrist, cam_right_wrist} CHW."""
        settings: Dict[str, Any] = dict(
            camera_keys={"head": "cam_high", "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"},
            image_layout="CHW",
        )
        settings.update(overrides)
        return cls(**settings)


def _supported_connect_kwargs() -> frozenset:
    return frozenset(inspect.signature(ws_client.connect).parameters)


def _shut_down(connection: ws_client.ClientConnection, expired: threading.Event) -> None:
    """Unblock a send() stuck on a server that does not read: any call on the socket now fails."""
    expired.set()
    try:
        connection.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the blocked call has failed on its own


class RemotePolicy:
    """The ``Policy`` interface over a websocket to an openpi-protocol server."""

    def __init__(self, config: Optional[RemotePolicyConfig] = None) -> None:
        """Does not connect yet: the first ``infer`` (or ``connect``/``metadata``) does."""
        self.config = config or RemotePolicyConfig()
        self._lock = threading.Lock()  # one request in flight per connection
        self._connection: Optional[ws_client.ClientConnection] = None
        self._metadata: Optional[Dict[str, Any]] = None
        self._backoff_s = self.config.backoff_initial_s
        self._next_attempt_at = 0.0
        self._last_failure = ""
        self._reply_limits = CodecLimits(
            max_message_bytes=self.config.max_message_bytes, max_array_bytes=self.config.max_message_bytes
        )
        self._connect_kwargs: Dict[str, Any] = dict(
            compression=None,
            open_timeout=self.config.connect_timeout_s,
            close_timeout=1.0,
            max_size=self.config.max_message_bytes,
            ping_interval=self.config.ping_interval_s,
            ping_timeout=self.config.ping_timeout_s,
        )
        if self.config.api_key:
            self._connect_kwargs["additional_headers"] = {"Authorization": f"Api-Key {self.config.api_key}"}
        supported = _supported_connect_kwargs()
        if "proxy" in supported:
            # websockets >= 15 would otherwise route through HTTP(S)_PROXY from the environment.
            self._connect_kwargs["proxy"] = None
        if "legacy" in supported:
            # websockets >= 17: we hold one connection across calls, outside a with-block, on purpose.
            self._connect_kwargs["legacy"] = True

    # -- Policy interface -------------------------------------------------------------------

    @property
    def metadata(self) -> Dict[str, Any]:
        """The server's metadata; connects if it was never fetched (may raise PolicyServerUnavailable)."""
        with self._lock:
            if self._metadata is None:
                self._ensure_connected()
            assert self._metadata is not None
            return dict(self._metadata)

    def infer(self, observation: Observation) -> PolicyResult:
        """Send one observation, return ``{"actions": float32[H, D], "policy_timing": {...}}``."""
        started = time.perf_counter()
        payload = packb(self.build_request(observation))
        encoded = time.perf_counter()
        with self._lock:
            connection = self._ensure_connected()
            sent = time.perf_counter()
            deadline = time.monotonic() + self.config.reply_timeout_s
            # websockets' send() has no timeout: a server that is alive but stopped reading (a hung process)
            # blocks it forever once the request outgrows the socket buffers. At the deadline the watchdog
            # shuts the socket down, which makes the blocked send() fail; recv() gets what is left.
            send_expired = threading.Event()
            watchdog = threading.Timer(self.config.reply_timeout_s, _shut_down, (connection, send_expired))
            watchdog.daemon = True
            watchdog.start()
            try:
                try:
                    connection.send(payload)
                finally:
                    watchdog.cancel()
                reply = connection.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError as exc:
                # A late reply must never be read as the answer to the next request: drop the socket.
                raise self._lost(f"no reply within {self.config.reply_timeout_s} s") from exc
            except (websockets.ConnectionClosed, OSError) as exc:
                if send_expired.is_set():
                    raise self._lost(
                        f"no reply within {self.config.reply_timeout_s} s (the server stopped reading the request)"
                    ) from exc
                raise self._lost(f"connection lost: {exc}") from exc
            received = time.perf_counter()
            if isinstance(reply, str):
                # openpi servers send the traceback as text, then close the connection.
                self._drop_connection()
                raise PolicyServerError(f"policy server {self.config.server_uri} failed:\n{reply}")
            try:
                result = unpackb(reply, self._reply_limits)
            except DecodeError as exc:
                self._drop_connection()
                raise PolicyOutputError(f"undecodable reply from {self.config.server_uri}: {exc}") from exc
            self._backoff_s = self.config.backoff_initial_s  # a full round trip: the link is healthy
        actions = self._checked_actions(result)
        finished = time.perf_counter()
        return {"actions": actions, "policy_timing": self._timing(result, started, encoded, sent, received, finished)}

    def reset(self) -> None:
        """The openpi protocol has no episode reset; remote policies are stateless between requests."""

    # -- connection management --------------------------------------------------------------

    def connect(self) -> Dict[str, Any]:
        """Connect now (if not connected) and return the server metadata."""
        with self._lock:
            self._ensure_connected()
            assert self._metadata is not None
            return dict(self._metadata)

    def close(self) -> None:
        """Close the connection; a later call reconnects."""
        with self._lock:
            self._drop_connection()

    def __enter__(self) -> "RemotePolicy":
        """Context manager closing the connection on exit."""
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """Close the connection."""
        self.close()

    @property
    def connected(self) -> bool:
        """Whether a connection is currently open (it may still turn out to be dead)."""
        return self._connection is not None

    @property
    def next_retry_in_s(self) -> float:
        """Seconds until the next connection attempt is allowed (0 when connected or allowed now)."""
        if self._connection is not None:
            return 0.0
        return max(0.0, self._next_attempt_at - time.monotonic())

    def _ensure_connected(self) -> ws_client.ClientConnection:
        if self._connection is not None:
            return self._connection
        wait_s = self._next_attempt_at - time.monotonic()
        if wait_s > 0:
            raise PolicyServerUnavailable(
                f"policy server {self.config.server_uri} unavailable; next attempt in {wait_s:.2f} s "
                f"(last failure: {self._last_failure})"
            )
        connection = None
        try:
            connection = ws_client.connect(self.config.server_uri, **self._connect_kwargs)
            first = connection.recv(timeout=self.config.connect_timeout_s)
            if isinstance(first, str):
                raise PolicyServerError(f"server sent text instead of metadata: {first[:500]}")
            metadata = unpackb(first, self._reply_limits)
            if not isinstance(metadata, dict):
                raise PolicyServerError(f"server metadata is {type(metadata).__name__}, expected a map")
        except Exception as exc:
            if connection is not None:
                connection.close()
            self._schedule_retry(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, websockets.InvalidStatus):
                raise PolicyServerRefused(
                    f"policy server {self.config.server_uri} refused the connection: "
                    f"HTTP {exc.response.status_code}"
                ) from exc
            raise PolicyServerUnavailable(f"cannot connect to {self.config.server_uri}: {exc}") from exc
        self._connection = connection
        self._metadata = metadata
        return connection

    def _schedule_retry(self, reason: str) -> None:
        self._last_failure = reason
        self._next_attempt_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self.config.backoff_max_s)

    def _lost(self, reason: str) -> PolicyServerUnavailable:
        self._drop_connection()
        self._schedule_retry(reason)
        return PolicyServerUnavailable(f"policy server {self.config.server_uri}: {reason}")

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    # -- observation and result translation ------------------------------------------------

    def build_request(self, observation: Observation) -> Dict[str, Any]:
        """Translate our observation into the server's keys (raises PolicyInputError, no network)."""
        if not isinstance(observation, dict):
            raise PolicyInputError(f"observation must be a dict, got {type(observation).__name__}")
        config = self.config
        request: Dict[str, Any] = dict(config.extra)
        images = observation.get("images") or {}
        if not isinstance(images, dict):
            raise PolicyInputError("observation['images'] must be a dict of camera name -> image")
        server_images = self._map_images(images)
        if config.images_key is None:
            request.update(server_images)
        else:
            request[config.images_key] = server_images

        request[config.state_key] = check_state(observation)

        if config.prompt_key is not None and "prompt" in observation:
            if not isinstance(observation["prompt"], str):
                raise PolicyInputError("'prompt' must be a string")
            request[config.prompt_key] = observation["prompt"]
        if config.rtc_key is not None and observation.get("rtc") is not None:
            request[config.rtc_key] = self._checked_rtc(observation["rtc"])
        return request

    @staticmethod
    def _checked_rtc(rtc: Any) -> Dict[str, Any]:
        if not isinstance(rtc, dict):
            raise PolicyInputError("'rtc' must be a dict")
        checked: Dict[str, Any] = {}
        for key, value in rtc.items():
            if isinstance(value, np.ndarray):
                if value.dtype.kind not in "iuf" or not np.isfinite(value).all():
                    raise PolicyInputError(f"rtc[{key!r}] must be a finite numeric array")
                value = np.ascontiguousarray(value)
            checked[str(key)] = value
        return checked

    def _map_images(self, images: Dict[str, Any]) -> Dict[str, np.ndarray]:
        mapping = self.config.camera_keys or {name: name for name in images}
        converted = {name: self._checked_image(name, image) for name, image in images.items() if name in mapping}
        server_images: Dict[str, np.ndarray] = {}
        for name, server_key in mapping.items():
            if name in converted:
                server_images[server_key] = converted[name]
            elif self.config.missing_camera == "error":
                raise PolicyInputError(f"camera {name!r} (server key {server_key!r}) is missing")
            elif self.config.missing_camera == "zeros":
                if not converted:
                    raise PolicyInputError(f"camera {name!r} is missing and no other image gives its shape")
                server_images[server_key] = np.zeros_like(next(iter(converted.values())))
        return server_images

    def _checked_image(self, name: str, image: Any) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise PolicyInputError(f"image {name!r} must be uint8[H, W, 3], got {image.dtype} {image.shape}")
        if self.config.image_layout == "CHW":
            return np.ascontiguousarray(image.transpose(2, 0, 1))
        return image

    def _checked_actions(self, result: Any) -> np.ndarray:
        if not isinstance(result, dict):
            raise PolicyOutputError(f"server reply is {type(result).__name__}, expected a map")
        actions = result.get(self.config.actions_key)
        if not isinstance(actions, np.ndarray) or actions.dtype.kind not in "iuf" or actions.ndim != 2:
            raise PolicyOutputError(f"server reply lacks a numeric [horizon, action_dim] '{self.config.actions_key}'")
        actions = actions.astype(np.float32)
        if not np.isfinite(actions).all():
            raise PolicyOutputError("server actions contain NaN or infinite values")
        return actions

    @staticmethod
    def _timing(
        result: Dict[str, Any], started: float, encoded: float, sent: float, received: float, finished: float
    ) -> Dict[str, float]:
        timing = {
            "infer_ms": (finished - started) * 1e3,  # what the caller waited, all included
            "encode_ms": (encoded - started) * 1e3,
            "roundtrip_ms": (received - sent) * 1e3,
            "decode_ms": (finished - received) * 1e3,
        }
        server_timing = result.get("server_timing")
        if isinstance(server_timing, dict) and isinstance(server_timing.get("infer_ms"), (int, float)):
            timing["server_infer_ms"] = float(server_timing["infer_ms"])
            timing["transport_ms"] = timing["roundtrip_ms"] - timing["server_infer_ms"]
        return timing
