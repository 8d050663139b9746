"""pi0-serve: serve any ``Policy`` over openpi's websocket protocol.

Usage::

    # a checkpoint directory; the model code is imported only now (see loader.py), and
    # --loader-kwargs go to its loader (Pi0Policy.from_checkpoint: device, dtype, num_steps)
    pi0-serve --checkpoint /data/ckpt/pi0_r1pro --policy-type pi0 --loader-kwargs '{"device": "cuda"}'
    # any factory returning a Policy, with keyword arguments as JSON
    pi0-serve --loader pi0_ros.serving.echo_policy:EchoPolicy --loader-kwargs '{"horizon": 50}'
    # reachable from the robot: bind an interface explicitly and require a key
    PI0_SERVE_API_KEY=secret pi0-serve --checkpoint DIR --host 0.0.0.0

(``python -m pi0_ros.serving.server ...`` is the same command.) Clients: openpi's
``openpi_client.websocket_client_policy.WebsocketClientPolicy`` or our
``pi0_ros.serving.remote_policy.RemotePolicy``. ``GET /healthz`` answers 200 for probes.

Protocol (openpi's, byte for byte): on connect the server sends the policy metadata as one
msgpack frame; then, per binary frame received (an observation map, numpy arrays in openpi's
msgpack-numpy encoding), it replies with the policy result plus
``server_timing = {"infer_ms", "decode_ms", "queue_ms", "prev_total_ms"}``. Any failure (a text
frame, undecodable or hostile bytes, NaN, missing keys, a policy exception) is answered with
the traceback as a text frame, then the connection is closed with code 1011; the server itself
keeps serving other and later clients.

Safety and sharing: binds 127.0.0.1 unless ``--host`` says otherwise; with an API key, clients
must send ``Authorization: Api-Key <key>`` or are refused with HTTP 401 before the websocket
opens (``/healthz`` stays open). Frames above ``--max-message-mb`` close the connection (1009).
All connections share one policy, whose ``infer`` runs on a single worker thread, one request
at a time, while the event loop keeps answering other clients, pings and health checks.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import hmac
import http
import json
import logging
import os
import signal
import threading
import time
import traceback
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

import websockets
import websockets.asyncio.server as ws_server
from websockets.frames import CloseCode

from pi0_ros.policy_api import Observation, Policy, PolicyResult
from pi0_ros.serving import loader as policy_loader
from pi0_ros.serving.msgpack_numpy import CodecLimits, DecodeError, packb, unpackb
from pi0_ros.serving.validation import ObservationLimits, check_observation, check_result

logger = logging.getLogger(__name__)

API_KEY_ENV = "PI0_SERVE_API_KEY"
HEALTH_PATH = "/healthz"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Where to listen and what to accept."""

    host: str = "127.0.0.1"
    port: int = 8000  # openpi's default; 0 picks a free port
    api_key: Optional[str] = None
    # 3 x 224x224x3 uint8 images are ~0.45 MB; 8 MiB leaves room for larger raw frames.
    max_message_bytes: int = 8 * 2**20
    max_connections: int = 8
    required_keys: Tuple[str, ...] = ()
    max_depth: int = 8
    # websockets' keepalive: drops clients that vanished without closing.
    ping_interval_s: Optional[float] = 20.0
    ping_timeout_s: Optional[float] = 20.0


class PolicyServer:
    """Serves one shared ``Policy`` to any number of websocket clients."""

    def __init__(
        self, policy: Policy, config: Optional[ServerConfig] = None, metadata: Optional[Dict[str, Any]] = None
    ) -> None:
        """Wrap ``policy``; ``metadata`` defaults to ``policy.metadata`` and must be msgpack-encodable."""
        self.config = config or ServerConfig()
        self._policy = policy
        # Encoded once: an unencodable metadata dict fails here, not on every connection.
        self._metadata_frame = packb(policy.metadata if metadata is None else metadata)
        self._codec_limits = CodecLimits(
            max_message_bytes=self.config.max_message_bytes, max_array_bytes=self.config.max_message_bytes
        )
        self._observation_limits = ObservationLimits(
            max_depth=self.config.max_depth, required_keys=tuple(self.config.required_keys)
        )
        key = self.config.api_key
        self._expected_authorization = f"Api-Key {key}".encode() if key else None
        self._worker: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._active_connections = 0
        self.port: Optional[int] = None  # the bound port, once listening

    async def serve(self, stop: asyncio.Event, on_ready: Optional[Callable[[int], None]] = None) -> None:
        """Listen until ``stop`` is set; ``on_ready(port)`` is called once the socket is bound."""
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pi0-serve-infer")
        try:
            async with ws_server.serve(
                self._handle,
                self.config.host,
                self.config.port,
                compression=None,  # images do not deflate well and deflate costs milliseconds
                max_size=self.config.max_message_bytes,
                max_queue=2,  # request/reply: bounds per-connection buffering to 2 frames
                process_request=self._process_request,
                ping_interval=self.config.ping_interval_s,
                ping_timeout=self.config.ping_timeout_s,
            ) as server:
                self.port = server.sockets[0].getsockname()[1]
                logger.info("serving on ws://%s:%d", self.config.host, self.port)
                if on_ready is not None:
                    on_ready(self.port)
                await stop.wait()
        finally:
            self._worker.shutdown(wait=False, cancel_futures=True)

    def serve_forever(self) -> None:
        """Block serving until SIGINT or SIGTERM."""

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await self.serve(stop)

        asyncio.run(run())

    def start_in_thread(self, timeout_s: float = 10.0) -> "ServerThread":
        """Start serving on a background thread (tests, benchmarks); returns once bound."""
        thread = ServerThread(self)
        thread.start(timeout_s)
        return thread

    def _process_request(self, connection: ws_server.ServerConnection, request: Any) -> Any:
        """Answers health checks and refuses unauthorised or surplus clients before the upgrade."""
        if urllib.parse.urlsplit(request.path).path == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._expected_authorization is not None:
            given = (request.headers.get("Authorization") or "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, self._expected_authorization):
                logger.warning("refused %s: missing or wrong API key", connection.remote_address)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "Missing or wrong API key\n")
        if self._active_connections >= self.config.max_connections:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections\n")
        return None

    async def _handle(self, connection: ws_server.ServerConnection) -> None:
        peer = connection.remote_address
        self._active_connections += 1
        logger.info("connection from %s opened", peer)
        try:
            await connection.send(self._metadata_frame)
            prev_total_ms: Optional[float] = None
            while True:
                frame = await connection.recv()
                started = time.perf_counter()
                try:
                    reply = await self._answer(connection, frame, prev_total_ms)
                except websockets.ConnectionClosed:
                    raise
                except _ClientGone:
                    return
                except Exception as exc:
                    logger.warning("request from %s failed: %s: %s", peer, type(exc).__name__, exc)
                    await self._send_error(connection, traceback.format_exc())
                    return
                await connection.send(reply)
                prev_total_ms = (time.perf_counter() - started) * 1e3
        except websockets.ConnectionClosed:
            pass
        finally:
            self._active_connections -= 1
            logger.info("connection from %s closed", peer)

    async def _answer(self, connection: ws_server.ServerConnection, frame: Any, prev_total_ms: Optional[float]
                      ) -> bytes:
        """Decode, check, infer on the worker thread, and encode one reply."""
        if isinstance(frame, str):
            raise DecodeError("expected a binary msgpack frame, got a text frame")
        decode_start = time.perf_counter()
        observation = unpackb(frame, self._codec_limits)
        check_observation(observation, self._observation_limits)
        decode_ms = (time.perf_counter() - decode_start) * 1e3

        assert self._worker is not None
        loop = asyncio.get_running_loop()
        inference = loop.run_in_executor(self._worker, self._infer, observation, time.perf_counter())
        # A client that gave up (its reply timeout) and reconnects must not find its abandoned requests
        # queued ahead of the new one on the single worker, nor their handlers holding connection slots.
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            await asyncio.wait((inference, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not inference.done():
            inference.cancel()  # dropped if still queued; one already running finishes and is discarded
            raise _ClientGone()
        result, infer_ms, queue_ms = inference.result()
        check_result(result)
        reply = dict(result)  # the policy's dict stays untouched
        reply.setdefault("policy_timing", {})
        server_timing = {"infer_ms": infer_ms, "decode_ms": decode_ms, "queue_ms": queue_ms}
        if prev_total_ms is not None:
            server_timing["prev_total_ms"] = prev_total_ms
        reply["server_timing"] = server_timing
        return packb(reply)

    def _infer(self, observation: Observation, queued_at: float) -> Tuple[PolicyResult, float, float]:
        started = time.perf_counter()
        result = self._policy.infer(observation)
        return result, (time.perf_counter() - started) * 1e3, (started - queued_at) * 1e3

    @staticmethod
    async def _send_error(connection: ws_server.ServerConnection, text: str) -> None:
        try:
            await connection.send(text)
            await connection.close(CloseCode.INTERNAL_ERROR, "Internal server error. Traceback in previous frame.")
        except websockets.ConnectionClosed:
            pass


class _ClientGone(Exception):
    """The client closed the connection while its request waited for the worker."""


class ServerThread:
    """A ``PolicyServer`` running its own event loop on a daemon thread."""

    def __init__(self, server: PolicyServer) -> None:
        """Prepare (not start) a thread for ``server``."""
        self.server = server
        self._thread = threading.Thread(target=self._run, name="pi0-serve", daemon=True)
        self._ready = threading.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._error: Optional[BaseException] = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        assert self.server.port is not None
        return self.server.port

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the thread and wait until the socket is bound (or raise why not)."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"server did not start within {timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"server failed to start: {self._error}") from self._error

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the listening socket and all connections, then join the thread."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop finished in the meantime
                pass
        self._thread.join(timeout_s)

    def __enter__(self) -> "ServerThread":
        """Context manager: the server is already running."""
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """Stop on leaving the block."""
        self.stop()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.server.serve(self._stop, on_ready=lambda _port: self._ready.set())

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to start(); a daemon thread has nobody else to tell
            self._error = exc
            logger.exception("policy server thread failed")
        finally:
            self._ready.set()


def build_arg_parser() -> argparse.ArgumentParser:
    """The ``pi0-serve`` command line."""
    parser = argparse.ArgumentParser(
        prog="pi0-serve",
        description="Serve a pi0 / pi0-FAST policy over openpi's websocket protocol.",
    )
    source = parser.add_argument_group("policy")
    source.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory to load")
    source.add_argument("--policy-type", choices=policy_loader.POLICY_TYPES, default="pi0",
                        help="which checkpoint loader reads --checkpoint (default: %(default)s)")
    source.add_argument(
        "--loader",
        metavar="MODULE:CALLABLE",
        help="factory returning a Policy, called with DIR first when --checkpoint is given "
        f"(default: per policy type, {policy_loader.CHECKPOINT_LOADERS})",
    )
    source.add_argument("--loader-kwargs", metavar="JSON", default="{}", help="keyword arguments for the loader")
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=ServerConfig.host, help="interface to bind (default: %(default)s)")
    net.add_argument("--port", type=int, default=ServerConfig.port)
    net.add_argument(
        "--api-key", help=f"require 'Authorization: Api-Key KEY' (prefer the {API_KEY_ENV} environment variable)"
    )
    net.add_argument("--max-message-mb", type=float, default=ServerConfig.max_message_bytes / 2**20)
    net.add_argument("--max-connections", type=int, default=ServerConfig.max_connections)
    net.add_argument("--require-key", action="append", default=[], metavar="KEY",
                     help="observation key every request must carry (repeatable)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``pi0-serve``; returns the process exit status."""
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        loader_kwargs = json.loads(args.loader_kwargs)
    except json.JSONDecodeError as exc:
        parser.error(f"--loader-kwargs is not JSON: {exc}")
    if not isinstance(loader_kwargs, dict):
        parser.error("--loader-kwargs must be a JSON object")
    if args.checkpoint is None and args.loader is None:
        parser.error("give --checkpoint DIR (with --policy-type) or --loader MODULE:CALLABLE")
    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_message_bytes=int(args.max_message_mb * 2**20),
        max_connections=args.max_connections,
        required_keys=tuple(args.require_key),
    )
    try:
        policy = policy_loader.load_policy(
            args.loader,
            args.checkpoint,
            args.policy_type if args.checkpoint is not None else None,
            loader_kwargs,
        )
    except policy_loader.PolicyLoadError as exc:
        logger.error("%s", exc, exc_info=logger.isEnabledFor(logging.DEBUG))
        return 2
    if config.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        logger.warning("serving on %s without an API key: anyone who can reach it can drive the policy", config.host)
    PolicyServer(policy, config).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
