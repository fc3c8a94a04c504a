"""What ``brainmri serve`` does below the app: read timeouts, connection caps, JSON errors, and
the cross-origin check for the API.

uvicorn hands a request to the app only once its headers are complete, so the app never sees
a client that sends half a header and waits, or announces a body and stalls; 64 of those used
to fill uvicorn's ``limit_concurrency`` and every other client got a plain-text 503 for as
long as they stayed. :class:`GuardedH11Protocol` is uvicorn's h11 protocol with these rules:

* the headers of a request must arrive within ``header_timeout`` seconds (of the connection,
  or of the previous response on a kept-alive one), trickled or not;
* a request body may pause for at most ``body_timeout`` seconds;
* at most ``max_connections`` connections at once and ``max_per_client`` from one address.
  At a cap, the connection that has waited longest on its client (idle for ``evict_idle``
  seconds or more) is closed to make room; only when none is idle is the newcomer refused.
  On loopback every client has the same address, so this, not the cap, keeps a stalled
  local client from locking out the others;
* every error the server itself sends is JSON like the app's: 408 for a timeout, 503 at a
  cap, 400 for malformed HTTP;
* a request head (request line and headers) is at most :data:`MAX_HEAD_BYTES`, however it
  arrives (h11's own limit holds only for a head still incomplete, so a larger one sent at once
  passed); a request with both ``Content-Length`` and ``Transfer-Encoding`` is refused and the
  connection closed, as RFC 9112 section 6.1 requires (h11 goes by ``Transfer-Encoding`` and
  kept the connection open for a request smuggled behind it).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from brainmri.errors import BrainMRIError

#: ``Sec-Fetch-Site`` values of requests a user's own browser makes to the page's own origin
#: (``none``: typed into the address bar or opened from a bookmark).
SAME_SITE_FETCH = ("same-origin", "none")
#: Longest request head (request line and headers) accepted, as h11 counts it.
MAX_HEAD_BYTES = 16 * 1024
#: A refused connection is answered when its request head arrives, or after this many seconds.
REFUSED_WAIT = 1.0
#: The end of a request head, as h11 finds it (lines may end in a bare LF).
_HEAD_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Limits:
    """Connection limits of one server (``brainmri serve --read-timeout/--max-connections/...``)."""

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_connections: int = 64
    max_per_client: int = 16
    evict_idle: float = 1.0

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "evict_idle"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise BrainMRIError(f"{name.replace('_', ' ')} must be a positive number of seconds, got {value!r}")
        for name in ("max_connections", "max_per_client"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise BrainMRIError(f"{name.replace('_', ' ')} must be at least 1, got {value!r}")


def json_response(status: int, message: str, reason: str) -> bytes:
    """A complete HTTP/1.1 response ``{"error": message}`` that closes the connection."""
    body = json.dumps({"error": message}).encode()
    retry = "retry-after: 1\r\n" if status == 503 else ""
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return f"{head}{retry}connection: close\r\n\r\n".encode("ascii") + body


def json_error_app(status: int, message: str) -> Any:
    """An ASGI app that answers every request with ``{"error": message}`` and closes."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(b"retry-after", b"1")] * (status == 503) + [(b"connection", b"close")]

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class _Guard:
    """The open connections of one server, by client address."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.open: set[GuardedH11Protocol] = set()
        self.by_client: dict[str, set[GuardedH11Protocol]] = {}

    def admit(self, conn: GuardedH11Protocol) -> str | None:
        """Register ``conn``, making room at a cap if a connection is idle; else the refusal."""
        lim = self.limits
        peers = self.by_client.setdefault(conn.peer, set())
        if len(peers) >= lim.max_per_client and not self._make_room(peers):
            return f"too many connections from {conn.peer} (limit {lim.max_per_client}); try again shortly"
        if len(self.open) >= lim.max_connections and not self._make_room(self.open):
            return f"the server is busy (limit {lim.max_connections} connections); try again shortly"
        peers.add(conn)
        self.open.add(conn)
        return None

    def release(self, conn: GuardedH11Protocol) -> None:
        self.open.discard(conn)
        peers = self.by_client.get(conn.peer)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self.by_client[conn.peer]

    def _make_room(self, pool: set[GuardedH11Protocol]) -> bool:
        now = time.monotonic()
        idle = [c for c in pool if c.phase in ("headers", "body") and now - c.last_input >= self.limits.evict_idle]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.last_input)
        victim.drop("request not completed in time: the connection was idle while the server was full")
        self.release(victim)
        return True


class CheckedConnection(h11.Connection):
    """h11's connection with the two refusals of the module docstring, raised as h11's own
    ``RemoteProtocolError`` so that uvicorn answers them like any malformed request (400, close);
    ``refusal`` keeps the reason for that answer."""

    refusal: str | None = None

    def next_event(self) -> Any:
        if self.their_state is h11.IDLE:  # a request head may be waiting in the buffer, unparsed
            data = self.trailing_data[0]
            end = _HEAD_END.search(data, 0, MAX_HEAD_BYTES + 4)
            if (end.end() if end else len(data)) > MAX_HEAD_BYTES:
                self._refuse(f"request head over {MAX_HEAD_BYTES:,} bytes (request line and headers)")
        event = super().next_event()
        if isinstance(event, h11.Request):
            names = {name.lower() for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                self._refuse("a request with both Content-Length and Transfer-Encoding is ambiguous (RFC 9112 6.1)")
        return event

    def _refuse(self, reason: str) -> None:
        self.refusal = reason
        raise h11.RemoteProtocolError(reason, error_status_hint=400)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read timeouts, connection caps and JSON errors (see the module)."""

    guard: _Guard  # one per server: set by :func:`protocol_class`

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conn = CheckedConnection(h11.SERVER, self.config.h11_max_incomplete_event_size or MAX_HEAD_BYTES)
        self.peer = ""
        self.last_input = time.monotonic()
        self.phase = "headers"  # waiting for a request's head, reading its "body", or the "app" has it
        self.partial = False  # bytes of the next request have arrived
        self.refusal: str | None = None
        self.timer: Any = None
        self.seen_cycle: Any = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = self.client[0] if self.client else "unknown"
        self.refusal = self.guard.admit(self)
        if self.refusal is not None:  # answered 503 (JSON) as soon as its request head is read
            self.app = json_error_app(503, self.refusal)
        self._arm(self.guard.limits.header_timeout if self.refusal is None else REFUSED_WAIT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.refusal is None:
            self.guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.last_input = time.monotonic()
        self.partial = self.partial or self.phase == "headers"
        super().data_received(data)
        self._update()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may parse a pipelined request
        self._update()

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP (h11 or :class:`CheckedConnection` refused the request): JSON, like
        every error, and the connection closed, so nothing sent after it is read."""
        self._disarm()
        refusal = getattr(self.conn, "refusal", None)
        message = f"invalid HTTP request: {refusal}" if refusal else "invalid HTTP request (malformed)"
        self.transport.write(json_response(400, message, "Bad Request"))
        self.transport.close()

    def _update(self) -> None:
        """Follow the request's phase and arm the timeout that belongs to it."""
        if self.transport.is_closing():
            self._disarm()
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            phase = "headers"
        elif cycle.more_body and not cycle.response_started:
            phase = "body"
        else:
            phase = "app"
        if phase == "headers" and (self.phase != "headers" or cycle is not self.seen_cycle):
            self.partial = False
            self._arm(self.guard.limits.header_timeout)  # a deadline: not re-armed by more bytes
        elif phase == "body":
            self._arm(self.guard.limits.body_timeout)  # idle time: re-armed by every chunk
        elif phase == "app":
            self._disarm()
        self.phase, self.seen_cycle = phase, cycle

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._timed_out, seconds)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self, seconds: float) -> None:
        self.timer = None
        if self.transport.is_closing() or self.phase == "app":
            return
        if self.phase == "body" and self.flow.read_paused:  # the app is behind, not the client
            self._arm(seconds)
            return
        if self.refusal is not None:
            self.transport.write(json_response(503, self.refusal, "Service Unavailable"))
            self.transport.close()
        elif self.phase == "headers":
            self.drop(f"request headers not received within {seconds:g} s")
        else:
            self.drop(f"request body stalled for {seconds:g} s")

    def drop(self, message: str) -> None:
        """Close the connection, answering 408 first if a request had begun and is unanswered."""
        self._disarm()
        cycle = self.cycle
        pending = cycle is not None and not cycle.response_complete
        begun = self.partial if self.phase == "headers" else self.phase == "body"
        if pending:
            cycle.disconnected = True  # the app, if it still reads the body, sees the client gone
            cycle.message_event.set()
        if begun and not (pending and cycle.response_started):
            self.transport.write(json_response(408, message, "Request Timeout"))
        self.transport.close()


def protocol_class(limits: Limits) -> type[GuardedH11Protocol]:
    """A protocol class with its own connection registry: one per server."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": _Guard(limits)})


def server_config(app: Any, limits: Limits | None = None, **kwargs: Any) -> Any:
    """The uvicorn configuration ``serve`` and ``running`` share: h11 with the guard above,
    no WebSocket support (the app has none), uvicorn's own concurrency limit off (the guard's
    caps replace it), idle kept-alive connections closed after 5 s."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=protocol_class(limits or Limits()),
        ws="none",
        limit_concurrency=None,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        **kwargs,
    )


def cross_origin_reason(headers: Mapping[str, str]) -> str | None:
    """Why a request comes from a page of another site (browsers say so in ``Sec-Fetch-Site``
    and ``Origin``), or None. Clients that are not browsers send neither and pass."""
    site = headers.get("sec-fetch-site", "").strip().lower()
    if site and site not in SAME_SITE_FETCH:
        return f"cross-origin request refused (Sec-Fetch-Site: {site[:40]}): the API answers only its own page"
    origin = headers.get("origin")
    if origin is None:
        return None
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or parts.netloc != headers.get("host", "").strip().lower():
        return f"cross-origin request refused (Origin: {origin[:100]!r}): the API answers only its own page"
    return None
