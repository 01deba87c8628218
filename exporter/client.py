"""The Notte API client: the only code that talks HTTP to Notte.

One shared `httpx.AsyncClient` (keep-alive, a connection pool sized to
`max_concurrency`), bearer auth from an `ApiKeySource`, retries with
exponential backoff and full jitter for transport errors, 5xx and 429, a
`Retry-After` pause shared by every request (across cycles), and a deadline per
call so a poll cycle can never overrun. httpx's exceptions are translated here,
at the boundary, into the exporter's own:

    NotteError
     +-- ApiUnreachable   transport error or timeout, after retries
     +-- Unauthorized     401 or 403: the key is wrong; never retried
     +-- NotFound         404: the session does not exist
     +-- RateLimited      429 after retries, or paused by Retry-After past the deadline
     +-- UpstreamError    5xx after retries, or another unexpected status
     +-- BadResponse      a 2xx body that is not JSON or not the expected shape
          +-- InvalidSession  a JSON session object that does not validate

Messages never hold the API key: they name the endpoint and what went wrong.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from exporter import __version__
from exporter.apikey import ApiKeySource
from exporter.labels import STATUSES
from exporter.model import Session, describe_invalid, parse_session
from exporter.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

USER_AGENT = f"notte-exporter/{__version__}"
MAX_RETRY_AFTER_SECONDS = 3600.0


class NotteError(Exception):
    """Base of the errors the client raises."""


class ApiUnreachable(NotteError):
    """A transport error or timeout."""


class Unauthorized(NotteError):
    """401 or 403."""


class NotFound(NotteError):
    """404."""


class RateLimited(NotteError):
    """429, or a Retry-After pause reaching past the deadline."""


class UpstreamError(NotteError):
    """5xx, or a status the exporter does not expect."""


class BadResponse(NotteError):
    """A 2xx answer whose body is not usable."""


class InvalidSession(BadResponse):
    """A session object that does not validate: skipped, like an invalid list item."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in attempts and by the deadline."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


@dataclass(frozen=True)
class ListPage:
    """One page of `GET /sessions`: the valid items, and how many raw items it held."""

    sessions: list[Session]
    item_count: int
    invalid_count: int
    has_next: bool | None


def session_path(session_id: str) -> str:
    """`/sessions/{id}` with the ID percent-encoded as one path segment.

    Every reserved character is encoded, and so are dots, so that no ID
    (`..`, `../x`, `a?b#c`) can reach another endpoint once URLs are normalised.
    """
    return "/sessions/" + quote(session_id, safe="").replace(".", "%2E")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class NotteClient:
    """Async client for the two endpoints the exporter uses."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: ApiKeySource,
        request_timeout: float,
        max_concurrency: int,
        metrics: SelfMetrics,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._api_key = api_key
        self._timeout = request_timeout
        self._metrics = metrics
        self._retry = retry or RetryPolicy()
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._paused_until = 0.0
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=request_timeout,
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
            follow_redirects=False,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def paused_for(self) -> float:
        """Seconds left of a Retry-After pause (0 when none)."""
        return max(0.0, self._paused_until - self._monotonic())

    async def get_session(self, session_id: str, *, deadline: float) -> Session:
        """One session; raises `NotFound` for a 404, `BadResponse` when it does not validate."""
        body = await self._request("get_session", session_path(session_id), None, deadline)
        try:
            return self._checked("get_session", parse_session(body))
        except ValidationError as exc:
            self._count_bad("get_session", "invalid_item")
            raise InvalidSession(f"get_session: invalid session: {describe_invalid(exc)}") from None

    async def list_sessions(
        self,
        *,
        page: int,
        page_size: int,
        include_system: bool,
        deadline: float,
        only_active: bool = True,
    ) -> ListPage:
        """One page of sessions; invalid items are skipped, logged and counted."""
        params = {
            "only_active": "true" if only_active else "false",
            "page": str(page),
            "page_size": str(page_size),
        }
        if include_system:
            params["include_system"] = "true"
        body = await self._request("list_sessions", "/sessions", params, deadline)
        items, has_next = self._page_items(body)
        sessions: list[Session] = []
        for index, item in enumerate(items):
            try:
                sessions.append(self._checked("list_sessions", parse_session(item)))
            except ValidationError as exc:
                self._count_bad("list_sessions", "invalid_item")
                log.warning(
                    "skipping an invalid session in the list: page %d item %d: %s",
                    page,
                    index,
                    describe_invalid(exc),
                )
        return ListPage(sessions, len(items), len(items) - len(sessions), has_next)

    def _page_items(self, body: Any) -> tuple[list[Any], bool | None]:
        """Both list shapes: a bare JSON list, or an object with `items` (and maybe `has_next`)."""
        if isinstance(body, list):
            return body, None
        if isinstance(body, dict) and isinstance(body.get("items"), list):
            has_next = body.get("has_next")
            return body["items"], has_next if isinstance(has_next, bool) else None
        self._count_bad("list_sessions", "bad_shape")
        raise BadResponse("list_sessions: the body is neither a list nor an object with items")

    async def _request(
        self, endpoint: str, path: str, params: dict[str, str] | None, deadline: float
    ) -> Any:
        """GET with retries; returns the decoded JSON body or raises a `NotteError`.

        A retry that the cycle's deadline cuts short raises the failure that
        caused the retry (the API answered 503, it did not time out), and a
        request cut short after waiting out a Retry-After pause is rate limited.
        """
        attempt = 0
        cause: NotteError | None = None
        while True:
            if await self._wait_for_pause(endpoint, deadline):
                cause = RateLimited(f"{endpoint}: HTTP 429, paused by Retry-After")
            outcome = await self._attempt(endpoint, path, params, deadline)
            if isinstance(outcome, _Decoded):
                return outcome.value
            if outcome.cut_short and cause is not None:
                raise cause
            cause = outcome.error
            delay = self._retry.delay(attempt, self._rng)
            attempt += 1
            if not outcome.retryable or attempt >= self._retry.attempts:
                raise outcome.error
            if self._monotonic() + delay >= deadline:
                raise outcome.error
            self._metrics.api_retries.labels(endpoint=endpoint).inc()
            log.debug("retrying %s in %.2fs after: %s", endpoint, delay, outcome.error)
            await asyncio.sleep(delay)

    async def _attempt(
        self, endpoint: str, path: str, params: dict[str, str] | None, deadline: float
    ) -> _Decoded | _Failure:
        """One request: the decoded body, or the error it ended in (not raised, to retry)."""
        remaining = deadline - self._monotonic()
        if remaining <= 0:
            error = ApiUnreachable(f"{endpoint}: the poll cycle deadline has passed")
            return _Failure(error, cut_short=True)
        headers = {"Authorization": f"Bearer {self._api_key.current().get_secret_value()}"}
        started = time.perf_counter()
        try:
            async with self._semaphore, asyncio.timeout(min(self._timeout, remaining)):
                response = await self._http.get(path, params=params, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            self._record(endpoint, "error", started)
            cut_short = remaining < self._timeout
            return _Failure(
                ApiUnreachable(f"{endpoint}: timed out"), retryable=True, cut_short=cut_short
            )
        except httpx.HTTPError as exc:
            self._record(endpoint, "error", started)
            return _Failure(ApiUnreachable(f"{endpoint}: {type(exc).__name__}"), retryable=True)
        self._record(endpoint, str(response.status_code), started)
        return self._interpret(endpoint, response)

    def _interpret(self, endpoint: str, response: httpx.Response) -> _Decoded | _Failure:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return _Decoded(json.loads(response.content))
            except ValueError:
                self._count_bad(endpoint, "not_json")
                return _Failure(BadResponse(f"{endpoint}: HTTP {status}, body is not JSON"))
        if status in (401, 403):
            return _Failure(Unauthorized(f"{endpoint}: HTTP {status}: the API key was refused"))
        if status == 404:
            return _Failure(NotFound(f"{endpoint}: HTTP 404"))
        if status == 429:
            return _Failure(self._rate_limited(endpoint, response), retryable=True)
        if status >= 500:
            return _Failure(UpstreamError(f"{endpoint}: HTTP {status}"), retryable=True)
        return _Failure(UpstreamError(f"{endpoint}: unexpected HTTP {status}"))

    def _rate_limited(self, endpoint: str, response: httpx.Response) -> RateLimited:
        pause = parse_retry_after(response.headers.get("Retry-After"), time.time())
        if pause is not None:
            self._paused_until = max(self._paused_until, self._monotonic() + pause)
            # Debug: the poller logs the failure once when it starts, not once per 429.
            log.debug("rate limited by the Notte API, pausing requests for %.1fs", pause)
            return RateLimited(f"{endpoint}: HTTP 429, Retry-After {pause:.0f}s")
        return RateLimited(f"{endpoint}: HTTP 429")

    async def _wait_for_pause(self, endpoint: str, deadline: float) -> bool:
        """Honour a Retry-After pause (True when it waited); fail at once if it reaches
        past the deadline."""
        wait = self._paused_until - self._monotonic()
        if wait <= 0:
            return False
        if self._monotonic() + wait >= deadline:
            raise RateLimited(f"{endpoint}: paused by Retry-After for another {wait:.1f}s")
        await asyncio.sleep(wait)
        return True

    def _record(self, endpoint: str, code: str, started: float) -> None:
        self._metrics.api_requests.labels(endpoint=endpoint, code=code).inc()
        self._metrics.api_request_duration.labels(endpoint=endpoint).observe(
            time.perf_counter() - started
        )

    def _checked(self, endpoint: str, session: Session) -> Session:
        """Count a status the contract does not know; the session is still exported."""
        if session.status not in STATUSES:
            self._count_bad(endpoint, "unknown_status")
        return session

    def _count_bad(self, endpoint: str, kind: str) -> None:
        self._metrics.bad_api_data.labels(endpoint=endpoint, kind=kind).inc()


@dataclass(frozen=True)
class _Decoded:
    value: Any


@dataclass(frozen=True)
class _Failure:
    error: NotteError
    retryable: bool = False
    cut_short: bool = False  # by the cycle's deadline, not by the request timeout
