"""Cap request bodies before anything buffers them.

A declared ``Content-Length`` over the limit is refused before a byte of the body is read. A body
without one (chunked uploads) or with a lying one is counted as it streams through the ASGI
``receive`` channel and cut off the moment it passes the limit: the app is stopped mid-read and
the client gets a 413 instead of whatever the interrupted app would have said.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """Raised into the app's body read when the stream passes the limit."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send, status: int, code: str, detail: str) -> None:
        body = json.dumps({"error": code, "detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await self._refuse(send, 400, "bad_request", "invalid Content-Length header")
                return
            if int(declared) > self.max_bytes:
                await self._refuse(send, 413, "request_too_large", too_large)
                return

        received = 0
        cut_off = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, cut_off
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    cut_off = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if cut_off:
                return  # whatever the interrupted app answers is replaced by the 413 below
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not cut_off:
                raise
        if cut_off and not response_started:
            await self._refuse(send, 413, "request_too_large", too_large)
