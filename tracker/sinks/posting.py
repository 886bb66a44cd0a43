"""One POST of a rendered body to a receiver, within a deadline, read as a :class:`SendResult`.

The webhook and the chat sinks (Slack, Teams) all send this way; they differ in the body, the
headers, and which answers mean "never again" (a revoked or deleted webhook).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable, Mapping

import httpx

from tracker.model import SendResult
from tracker.text import one_line, retry_after

#: Bytes of a receiver's answer kept for the log; the rest is not read. A receiver answers
#: "ok" or a short error, and whatever it sends beyond that must not grow the daemon.
ANSWER_PREVIEW = 4096
#: The shortest part of a URL's path or query hidden from errors as a secret: Slack's and
#: Teams' tokens are far longer, and a shorter part (``services``, ``v1``) gives nothing away.
SECRET_PART = 8

#: Whether an answer (status, its text) means "never retry": the reason, or ``None``.
NeverRetry = Callable[[int, str], str | None]
#: Whether a 2xx answer (status, its text) really is a success: ``None``, or what went wrong.
Refusal = Callable[[int, str], str | None]


def gone_on_410(status: int, _said: str) -> str | None:
    """Standard Webhooks' rule: 410 Gone asks the sender to stop."""
    return "the receiver asked to stop sending (410 Gone)" if status == 410 else None


def accepted(_status: int, _said: str) -> str | None:
    """Every 2xx answer is a success."""
    return None


def masked(url: str) -> str:
    """``url`` as far as its host: its path and query may be the secret (Slack, Teams)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}/…" if parts.path.strip("/") or parts.query else url


def secret_parts(url: str) -> tuple[str, ...]:
    """What of ``url`` must never show in an error or a log, longest first: the URL itself,
    its path and query, and each long enough part of them (an answer may echo one alone)."""
    parts = urllib.parse.urlsplit(url)
    pieces = {url, parts.path, parts.query, f"{parts.path}?{parts.query}"}
    pieces.add(parts.netloc.rpartition("@")[0])  # user:password@
    pieces |= {piece for piece in parts.path.split("/") if len(piece) >= SECRET_PART}
    for _key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        pieces.add(value)
        pieces.add(urllib.parse.quote(value, safe=""))
    return tuple(sorted((p for p in pieces if len(p) >= SECRET_PART), key=len, reverse=True))


def scrub(text: str, hidden: tuple[str, ...]) -> str:
    """``text`` with every hidden part replaced by ``…``."""
    for piece in hidden:
        text = text.replace(piece, "…")
    return text


class Poster:
    """POSTs bodies to one URL: each attempt ends within ``deadline`` seconds in total, however
    slowly the receiver drips its answer, and reads at most :data:`ANSWER_PREVIEW` bytes of it.

    With ``secret_url``, no part of the URL's path or query reaches an error (which is logged
    and stored): a proxy's error page or a transport error that quotes it is scrubbed.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        deadline: float,
        secret_url: bool = False,
        never_retry: NeverRetry = gone_on_410,
        refusal: Refusal = accepted,
    ) -> None:
        self._http = http
        self._url = url
        self._deadline = deadline
        self._hidden = secret_parts(url) if secret_url else ()
        self._never_retry = never_retry
        self._refusal = refusal

    async def post(self, body: bytes, headers: Mapping[str, str]) -> SendResult:
        """POST once; 2xx is success (unless ``refusal`` says otherwise), an answer that
        ``never_retry`` names is a dead letter at once, anything else is retried."""
        try:
            async with asyncio.timeout(self._deadline):
                response, answer = await self._exchange(body, headers)
        except (TimeoutError, httpx.TimeoutException):
            return SendResult(ok=False, error=f"timed out after {self._deadline:g} s")
        except httpx.TransportError as exc:
            said = self._clean(f"{type(exc).__name__}: {exc}")
            return SendResult(ok=False, error=f"connection failed: {said}")
        except (httpx.InvalidURL, ValueError) as exc:  # IDNA and port errors quote the URL
            unusable = f"the url cannot be used ({type(exc).__name__}): fix it, then retry"
            return SendResult(ok=False, error=unusable, gone=True)
        status = response.status_code
        said = self._clean(answer.decode("utf-8", "replace"))
        if 200 <= status < 300:
            refused = self._refusal(status, said)
            if refused is None:
                return SendResult(ok=True, status=status)
            return SendResult(ok=False, status=status, error=f"HTTP {status}: {refused}")
        error = f"HTTP {status}: {said}" if said else f"HTTP {status}"
        why = self._never_retry(status, said)
        return SendResult(
            ok=False,
            status=status,
            error=f"{error} (not retried: {why})" if why else error,
            retry_after=retry_after(response.headers.get("retry-after")),
            gone=why is not None,
        )

    def _clean(self, text: str) -> str:
        """One line of at most 200 characters: enough to say why, short enough to store."""
        return one_line(scrub(text, self._hidden))

    async def _exchange(
        self, body: bytes, headers: Mapping[str, str]
    ) -> tuple[httpx.Response, bytes]:
        """POST and read the start of the answer; a longer answer's connection is dropped.

        The answer is read as it came, never inflated (requests ask for ``identity``).
        """
        async with self._http.stream(
            "POST", self._url, content=body, headers=dict(headers)
        ) as response:
            answer = b""
            async for chunk in response.aiter_raw():
                answer += chunk
                if len(answer) >= ANSWER_PREVIEW:
                    break
        return response, answer[:ANSWER_PREVIEW]
