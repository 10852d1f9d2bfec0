"""A lean asyncio HTTP/1.1 client for JSON POSTs to one endpoint (keep-alive pool).

Annotation sends tens of thousands of tiny identical-looking requests; the
general-purpose stack (SDK request building, httpx, httpcore, anyio) costs
several milliseconds of CPU per request, which on one event loop caps a run at
a few hundred requests per second. This client does only what a JSON POST to
an OpenAI-compatible endpoint needs: ``http``/``https`` (TLS with the system's
certificates), persistent connections, ``Content-Length`` and chunked bodies,
gzip/deflate bodies, and a whole-request timeout. It is used when
``OpenAIClient(transport="auto")`` sees no proxy settings; the ``openai``
SDK is used otherwise (``transport="openai"``).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import zlib
from urllib.parse import urlsplit

__all__ = ["FastTransport", "HTTPStatusError"]

_timeout = getattr(asyncio, "timeout", None)  # Python >= 3.11


class HTTPStatusError(Exception):
    """A response with status >= 400."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.body = body
        try:
            detail = json.loads(body)["error"]["message"]
        except Exception:
            detail = body[:200].decode("utf-8", "replace")
        super().__init__(f"HTTP {status}: {detail}")


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # already gone
            pass


class FastTransport:
    """POST JSON to ``base_url + path`` over pooled HTTP/1.1 connections."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}.")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.prefix = parts.path.rstrip("/")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        base = {
            "Host": host_header,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Connection": "keep-alive",
            **headers,
        }
        self._head = "".join(f"{k}: {v}\r\n" for k, v in base.items())
        self.timeout = timeout
        self._idle: list[_Conn] = []
        self._ssl = ssl.create_default_context() if self.tls else None

    async def _open(self) -> _Conn:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self._ssl, limit=2**20
        )
        return _Conn(reader, writer)

    async def post_json(
        self, path: str, payload: dict, extra_headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; return ``(status, headers, body)``.

        A pooled connection that the server closed while idle is replaced
        transparently; other failures raise ``ConnectionError`` or
        ``TimeoutError``.
        """
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (extra_headers or {}).items())
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}{extra}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        if _timeout is None:  # Python 3.10
            return await asyncio.wait_for(self._exchange(head + body), self.timeout)
        # asyncio.timeout runs the exchange in this task; wait_for would start a
        # second task per request, costing event-loop turns under load.
        async with _timeout(self.timeout):
            return await self._exchange(head + body)

    async def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        for _ in range(3):
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._open()
            try:
                conn.writer.write(request)
                await conn.writer.drain()
                status, headers, body, keep = await self._read_response(conn.reader)
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
                conn.close()
                if reused:  # stale keep-alive connection: try a fresh one
                    continue
                raise ConnectionError(str(exc) or type(exc).__name__) from exc
            except BaseException:
                conn.close()
                raise
            if keep:
                self._idle.append(conn)
            else:
                conn.close()
            return status, headers, body
        raise ConnectionError("connection closed by the server")

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader):
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise ConnectionError(f"malformed status line {lines[0]!r}") from exc
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close"
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers end with an empty line
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await reader.read()
            keep = False
        encoding = headers.get("content-encoding", "").lower()
        if encoding == "gzip":
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        return status, headers, body, keep

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()
