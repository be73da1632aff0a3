"""A deadline for each request's first line and headers, which uvicorn does not have.

uvicorn closes a connection idle between requests after its keep-alive timeout, but from the moment
a connection opens until its first request's headers are complete there is no timer at all, and a
client that trickles header bytes resets the keep-alive timer with each one: idle or slow sockets
stay open for as long as their client likes. The protocol class below arms a deadline when the
connection opens and again when a response completes, and disarms it once a request's headers have
been parsed (uvicorn then holds a new request cycle); at the deadline the connection is closed.
Requests in progress, bodies and streamed responses are never cut by it.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger("dllm.server")


def header_deadline_protocol(timeout_s: float, base: type[asyncio.Protocol] = AutoHTTPProtocol) -> type:
    """uvicorn's HTTP protocol (h11, or httptools when installed) with the header deadline."""

    class HeaderDeadlineProtocol(base):
        _deadline: asyncio.TimerHandle | None = None
        _idle_cycle = None  # the request cycle (or None) in place when the deadline was armed

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not self._idle_cycle:  # a request's headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            in_progress = self.cycle is not None and not self.cycle.response_complete
            if in_progress or self.transport.is_closing():  # a pipelined request already started
                return
            self._idle_cycle = self.cycle
            self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is self._idle_cycle and not self.transport.is_closing():
                log.info("closing %s: no complete request headers within %.3g s", self.client, timeout_s)
                self.transport.close()

    return HeaderDeadlineProtocol
