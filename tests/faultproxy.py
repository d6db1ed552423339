"""A fault-injecting HTTP proxy between priorflow and the local S3 server (tests and benchmarks only).

    proxy = FaultProxy("http://127.0.0.1:7480", Schedule(rate=0.3, seed=1))
    with proxy:                                   # listens on 127.0.0.1, a free port, in a background thread
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
        ...
    proxy.counts                                  # {"refuse": 3, "http_503": 4, ..., "requests": 120, "retried": 14}

It reads each HTTP/1.1 request whole (Content-Length or chunked), forwards it on its own connection to the
server, reads the answer whole and passes it back, unless the schedule says to inject a fault into that request:

    refuse     reset the connection (RST) without forwarding the request nor sending a byte: what a client sees
               from a server that refuses or drops its connection
    http_503   answer ``503 Slow Down`` with S3's XML error body, without forwarding: S3's throttling answer
    slow       forward, then hold the answer back `slow_s` seconds (below any client timeout): not an error
    cut        forward (the server acts on it), then send only part of the answer (within the body when there
               is one) and close: a response cut off mid-transfer

Which request gets which fault is decided from the seed, the request (method, target and a hash of its body)
and how many times that same request was seen before, so it does not depend on the order in which concurrent
clients arrive. A transient schedule faults a share `rate` of requests but never more than `max_consecutive`
attempts of one request in a row; a persistent one faults every request, after the first `after` (counted from
the first request that contains `start_after`, when set: "PUT /bucket/out.zarr/_done/c/" starts an outage
right after a shard is marked done). Only loopback
addresses are used, every wait is bounded, and the proxy closes itself after `lifetime_s`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Self
from urllib.parse import urlsplit

KINDS = ("refuse", "http_503", "slow", "cut")
FAILING = ("refuse", "http_503", "cut")  # the client sees an error (a slow answer is still an answer)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
IO_TIMEOUT_S = 60.0  # the longest the proxy waits for one read from either side
MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Schedule:
    """Which requests are faulted, and how."""

    rate: float = 0.0  # share of requests faulted (transient); 0 forwards everything untouched
    kinds: tuple[str, ...] = KINDS  # the faults drawn from
    max_consecutive: int = 2  # transient: at most this many failed attempts of one request in a row
    persistent: bool = False  # fault every request, after the first `after`
    after: int = 0  # requests passed untouched before any fault
    start_after: str = ""  # if set, no fault before a request whose "METHOD /path" contains this has passed
    seed: int = 0
    slow_s: float = 0.3

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {KINDS}")
        if self.persistent and not set(self.kinds) & set(FAILING):
            raise ValueError("a persistent schedule needs a failing kind: refuse, http_503 or cut")


class HttpMessage:
    """One HTTP/1.1 message read whole: its head (start line and headers) and its body, both raw bytes."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head, self.body = head, body
        lines = head.decode("latin-1").split("\r\n")
        self.start = lines[0]
        self.headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()

    @property
    def raw(self) -> bytes:
        return self.head + self.body


async def _read(coro):  # every read is bounded in time
    return await asyncio.wait_for(coro, IO_TIMEOUT_S)


async def read_message(
    reader: asyncio.StreamReader, request_method: str | None = None, client: asyncio.StreamWriter | None = None
) -> HttpMessage | None:
    """The next request (request_method None) or the answer to a `request_method` request; None at a clean EOF.

    A request that expects `100 Continue` (botocore asks for it before a PUT body) is told to go on by the proxy
    itself, which then forwards it without the header, so that the server sends no interim answer of its own.
    """
    try:
        head = await _read(reader.readuntil(b"\r\n\r\n"))
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ConnectionError("connection closed inside an HTTP head") from exc
        return None
    if len(head) > MAX_HEAD:
        raise ConnectionError("HTTP head too long")
    message = HttpMessage(head, b"")
    headers = message.headers
    if request_method is None and headers.get("expect", "").lower() == "100-continue" and client is not None:
        kept = [line for line in head.splitlines(keepends=True) if not line.lower().startswith(b"expect:")]
        message = HttpMessage(b"".join(kept), b"")
        client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await _read(client.drain())
    if request_method is not None:  # an answer: some carry no body whatever their headers say
        status = int(message.start.split()[1])
        if request_method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return message
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = await _read(reader.readuntil(b"\r\n"))
            size = int(size_line.split(b";")[0], 16)
            body += size_line
            if size == 0:
                while (trailer := await _read(reader.readuntil(b"\r\n"))) != b"\r\n":
                    body += trailer
                body += b"\r\n"
                break
            body += await _read(reader.readexactly(size + 2))
        message.body = body
    elif "content-length" in headers:
        message.body = await _read(reader.readexactly(int(headers["content-length"])))
    elif request_method is not None and headers.get("connection", "").lower() == "close":
        message.body = await _read(reader.read())
    return message


def slow_down(method: str, target: str, number: int) -> bytes:
    """S3's throttling answer, as AWS sends it."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request '
        f"rate.</Message><Resource>{urlsplit(target).path}</Resource><RequestId>faultproxy-{number}</RequestId></Error>"
    ).encode()
    head = (
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nx-amz-request-id: faultproxy-{number}\r\n\r\n"
    ).encode()
    return head if method == "HEAD" else head + body


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, dropping anything unsent."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """The proxy; `counts` holds faults injected per kind, `requests` seen and `retried` (requests that came
    again after an attempt of theirs was faulted). Use as a context manager, or start()/stop()."""

    def __init__(self, upstream: str, schedule: Schedule | None = None, lifetime_s: float = 900.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK:
            raise ValueError(f"the proxy only forwards plain HTTP to a loopback server, not {upstream}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.lifetime_s = lifetime_s
        self.counts: Counter[str] = Counter({kind: 0 for kind in KINDS} | {"requests": 0, "retried": 0})
        self._lock = threading.Lock()
        self._since = 0  # requests seen when the schedule was set
        self.schedule = schedule or Schedule()
        self._seen: Counter[str] = Counter()  # attempts per request
        self._failed_in_a_row: Counter[str] = Counter()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    @property
    def schedule(self) -> Schedule:
        return self._schedule

    @schedule.setter
    def schedule(self, schedule: Schedule) -> None:
        """Replace the schedule (also while running); its `after` counts requests from now on."""
        with self._lock:
            self._schedule, self._since, self._armed = schedule, self.counts["requests"], not schedule.start_after

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def faults(self) -> int:
        return sum(self.counts[kind] for kind in KINDS)

    def reset_counts(self) -> None:
        with self._lock:
            self.counts = Counter({kind: 0 for kind in KINDS} | {"requests": 0, "retried": 0})
            self._since = 0

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> Self:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        handlers: set[asyncio.Task] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.add(asyncio.current_task())
            try:
                await self._serve(reader, writer)
            except asyncio.CancelledError:
                pass  # stopping: end quietly (asyncio logs an error for a cancelled connection handler)
            finally:
                handlers.discard(asyncio.current_task())

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.lifetime_s)
        except TimeoutError:
            pass
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    # --- the schedule --------------------------------------------------------------------------------------
    def _decide(self, request: HttpMessage) -> str | None:
        """The fault for this attempt of `request`, or None; counts it."""
        method, target = request.start.split()[:2]
        key = f"{method} {target} {hashlib.sha1(request.body).hexdigest()}"
        with self._lock:
            schedule = self._schedule
            attempt = self._seen[key]
            self._seen[key] += 1
            self.counts["requests"] += 1
            line = f"{method} {urlsplit(target).path}"
            if self._failed_in_a_row[key]:
                self.counts["retried"] += 1
            draw = random.Random(f"{schedule.seed}:{key}:{attempt}")
            kind = None
            if self._armed and self.counts["requests"] - self._since > schedule.after:
                if schedule.persistent:
                    kind = draw.choice([k for k in schedule.kinds if k in FAILING])
                elif draw.random() < schedule.rate:
                    kind = draw.choice(schedule.kinds)
                    if kind in FAILING and self._failed_in_a_row[key] >= schedule.max_consecutive:
                        kind = None
            if kind in FAILING:
                self._failed_in_a_row[key] += 1
            else:
                self._failed_in_a_row.pop(key, None)
            if kind:
                self.counts[kind] += 1
            elif not self._armed and schedule.start_after in line:
                self._armed, self._since = True, self.counts["requests"]
            return kind

    # --- one client connection -----------------------------------------------------------------------------
    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while (request := await read_message(client_reader, client=client_writer)) is not None:
                kind = self._decide(request)
                method, target = request.start.split()[:2]
                if kind == "refuse":
                    reset(client_writer)
                    return
                if kind == "http_503":
                    client_writer.write(slow_down(method, target, self.counts["requests"]))
                    await _read(client_writer.drain())
                    continue
                answer = None
                for fresh in (upstream is None, True):  # a kept-alive server connection may have timed out: once more
                    if fresh:
                        if upstream is not None:
                            upstream[1].close()
                        upstream = await _read(asyncio.open_connection(*self.upstream))
                    upstream[1].write(request.raw)
                    await _read(upstream[1].drain())
                    if (answer := await read_message(upstream[0], method)) is not None or fresh:
                        break
                if answer is None:
                    raise ConnectionError("the S3 server closed the connection without answering")
                if kind == "slow":
                    await asyncio.sleep(self.schedule.slow_s)
                if kind == "cut":
                    cut_at = len(answer.head) + len(answer.body) // 2 if answer.body else len(answer.head) // 2
                    client_writer.write(answer.raw[:cut_at])
                    await _read(client_writer.drain())
                    return
                client_writer.write(answer.raw)
                await _read(client_writer.drain())
                if answer.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass  # a client or server that went away, or spoke nonsense: drop the connection
        finally:
            client_writer.close()
            if upstream is not None:
                upstream[1].close()
