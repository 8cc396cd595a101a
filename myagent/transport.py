"""HTTP under the openai SDK: an httpx2 transport on aiohttp that hands over the response.

The SDK keeps what it is good at (configuration, auth headers, retries, error types);
this transport sends its requests with one aiohttp session and puts the aiohttp response
in `response.extensions["aiohttp_response"]`, so OpenAIModel reads a stream's bytes
straight from aiohttp: per chunk, one await instead of four layers of generators. It
sets no per-read timer (OpenAIModel times out an idle stream itself) and keeps no
cookies. Its errors are httpx2's, which the SDK turns into its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx2

EXTENSION = "aiohttp_response"
_DECODED = (b"content-encoding", b"content-length")


class _Body(httpx2.AsyncByteStream):
    """The response body for the SDK's own reads (error bodies)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self.response.content.iter_any():
                yield data
        except aiohttp.ClientError as exc:
            raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self.response.release()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """One aiohttp session for every request of one SDK client."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        """Create the session ahead of the first request (needs a running loop)."""
        self._get_session()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            response = await self._get_session().request(
                request.method,
                str(request.url),
                # aiohttp asks for the encodings it can decode, and decodes them.
                headers=[h for h in request.headers.multi_items() if h[0] != "accept-encoding"],
                data=request.content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=timeout.get("connect"), sock_read=timeout.get("read")
                ),
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx2.ConnectTimeout(str(exc) or "timed out", request=request) from exc
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx2.NetworkError(str(exc) or type(exc).__name__, request=request) from exc
        return httpx2.Response(
            status_code=response.status,
            # The body arrives decoded: its encoding and length headers no longer apply.
            headers=[h for h in response.raw_headers if h[0].lower() not in _DECODED],
            stream=_Body(response),
            request=request,
            extensions={EXTENSION: response},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
