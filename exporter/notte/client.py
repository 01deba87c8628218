"""The Notte API client: the only code that talks HTTP to Notte.

One shared `httpx.AsyncClient` (keep-alive), bearer auth from an
`ApiKeySource`, retries with exponential backoff and full jitter for transport
errors, 5xx and 429, a `Retry-After` pause shared by every request (across
cycles), and two times per call: a start-by time after which no attempt (first
or retry) starts, and a deadline by which every attempt ends.

The one bound on concurrency is here: a request needs a `RequestSlot` (at most
`max_concurrency` exist at once), held from before its first byte until its
answer is read or it fails, retries and pauses included. A caller reserves a
slot with a start-by time and gets `NotStarted` if none comes free by then:
nothing was sent, so nothing is wasted. The connection pool does not bound
anything on its own; it only keeps `max_concurrency` connections alive.

Bodies are streamed and capped at `max_response_bytes` after decompression
(`exporter.notte.answers`); redirects are never followed, so the key goes nowhere but
the configured base URL. httpx's exceptions are translated here, at the
boundary, into the exporter's own:

    NotteError
     +-- ApiUnreachable     transport error or timeout, after retries
     |    +-- RequestCut    cut by its deadline (not by the request timeout)
     +-- Unauthorized       401 or 403: the key is wrong; never retried
     +-- NotFound           404: the session does not exist
     +-- RateLimited        429 after retries, or paused by Retry-After past the deadline
     +-- UpstreamError      5xx after retries, a redirect, or another unexpected status
     +-- UnusableSessionId  an ID that cannot be put in a URL; no request is made
     +-- NotStarted         no slot came free by the start-by time; no request is made
     +-- BadResponse        a 2xx body that is not JSON, not the expected shape,
          |                 or about another session than the one asked for
          +-- InvalidSession    a JSON session object that does not validate
          +-- ResponseTooLarge  a body over `max_response_bytes` once decoded

Messages never hold the API key nor a query string: they name the endpoint,
the host and what went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from exporter import __version__
from exporter.labels import (
    BAD_SHAPE,
    CUT,
    FUNCTIONS_HEALTH,
    GET_FUNCTION,
    GET_FUNCTION_RUN,
    GET_SESSION,
    GET_USAGE,
    INVALID_ITEM,
    LIST_FUNCTION_RUNS,
    LIST_FUNCTIONS,
    LIST_SESSIONS,
    NOT_JSON,
    STATUSES,
    TOO_LARGE,
    TRANSPORT_ERROR,
    UNAVAILABLE,
    UNKNOWN_STATUS,
    UNUSABLE_ID,
    WRONG_SESSION,
)
from exporter.notte.accountmodel import Function, FunctionDetail, FunctionRun, RuntimeHealth, Usage
from exporter.notte.answers import BodyTooLarge, BodyUndecodable, read_body
from exporter.notte.apikey import ApiKeySource
from exporter.notte.model import Session, describe_invalid, parse_session
from exporter.settings import DEFAULT_MAX_RESPONSE_BYTES

log = logging.getLogger(__name__)

USER_AGENT = f"notte-exporter/{__version__}"
MAX_RETRY_AFTER_SECONDS = 3600.0
# Notte's IDs are UUIDs; this leaves room for any other scheme while keeping a
# configured ID from making an URL no server (nor httpx, past 64 KiB) takes.
MAX_SESSION_ID_LENGTH = 1024
# Parsed JSON costs up to 25 times its text (`[{},{},...]`: a 72-byte dict per 3
# bytes), so a body under the byte cap could still take hundreds of MiB. Values
# (counted by `,`, `{` and `[`) are capped too: a page of sessions has one per
# ~30 bytes, and at this bound a body's parse costs a few times the byte cap.
JSON_BYTES_PER_VALUE = 16
# The encodings `answers` decodes within the cap; httpx would add br/zstd if installed.
ACCEPT_ENCODING = "gzip, deflate"


class RequestObserver(Protocol):
    """Where the client reports what it did (the exporter's self-metrics implement it)."""

    def request_done(self, endpoint: str, code: str, seconds: float) -> None: ...
    def request_retried(self, endpoint: str) -> None: ...
    def bad_data(self, endpoint: str, kind: str) -> None: ...


class NotteError(Exception):
    """Base of the errors the client raises."""


class ApiUnreachable(NotteError):
    """A transport error or timeout."""


class RequestCut(ApiUnreachable):
    """A request its deadline cut short: the API may have been serving it (`code="cut"`)."""


class Unauthorized(NotteError):
    """401 or 403."""


class NotFound(NotteError):
    """404."""


class RateLimited(NotteError):
    """429, or a Retry-After pause reaching past the deadline."""


class UpstreamError(NotteError):
    """5xx, or a status the exporter does not expect."""


class UnusableSessionId(NotteError):
    """A session ID that cannot be put in a URL (empty, too long, control characters).

    Raised before any request: the caller skips that one session, not the cycle.
    """


class NotStarted(NotteError):
    """No request slot came free before the start-by time: nothing was sent.

    Not a failure of the API: the caller asks again next time, first.
    """


class BadResponse(NotteError):
    """A 2xx answer whose body is not usable."""


class InvalidSession(BadResponse):
    """A session object that does not validate: skipped, like an invalid list item."""


class ResponseTooLarge(BadResponse):
    """A body over `max_response_bytes` after decompression; it was not read further."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in attempts and by the deadline."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class RequestSlot:
    """The right to have one request open at the API; released once, however it ends."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


@dataclass(frozen=True)
class ListPage:
    """One page of `GET /sessions/`: the valid items, how many raw items it held (a short
    page ends the listing), and the page's `has_next` (None for a bare list)."""

    sessions: list[Session]
    item_count: int
    has_next: bool | None


def preview(text: str, limit: int = 80) -> str:
    """`text` fit for one log line: control characters escaped, cut to `limit` characters."""
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return shown + (f"... ({len(text)} characters)" if len(text) > limit else "")


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
        metrics: RequestObserver,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._api_key = api_key
        self._timeout = request_timeout
        self._metrics = metrics
        self._max_response_bytes = max_response_bytes
        self._retry = retry or RetryPolicy()
        self._monotonic = monotonic
        self._clock = clock  # wall time, for Retry-After's HTTP dates
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._paused_until = 0.0
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            timeout=request_timeout,
            # Not a bound: the slots are (a second bound would queue requests
            # out of sight, and hold a reserved slot idle).
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=max_concurrency),
            follow_redirects=False,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def reserve(self, *, start_by: float) -> RequestSlot:
        """A slot for one request, as soon as one is free; `NotStarted` if none is by
        `start_by` (in the client's monotonic time)."""
        try:
            async with asyncio.timeout(max(0.0, start_by - self._monotonic())):
                await self._slots.acquire()
        except TimeoutError:
            raise NotStarted("no request slot came free in time; nothing was sent") from None
        slot = RequestSlot(self._slots)
        if self._monotonic() > start_by:  # the injected clock may run ahead of the loop's
            slot.release()
            raise NotStarted("no request slot came free in time; nothing was sent")
        return slot

    @contextlib.asynccontextmanager
    async def _holding(self, slot: RequestSlot | None, start_by: float) -> AsyncIterator[None]:
        """Hold `slot` (or one reserved now, to start by `start_by`) for one request."""
        held = slot or await self.reserve(start_by=start_by)
        try:
            yield
        finally:
            held.release()

    async def get_session(
        self,
        session_id: str,
        *,
        deadline: float,
        start_by: float | None = None,
        slot: RequestSlot | None = None,
    ) -> Session:
        """One session; raises `NotFound` for a 404, `InvalidSession` when it does not
        validate, `BadResponse` when the answer is about another session, and
        `UnusableSessionId`, before any request, for an ID that cannot be asked for.

        No attempt starts after `start_by` (default: `deadline`). `slot` is one
        reserved beforehand; without it the call waits for one."""
        window = _Window(deadline if start_by is None else start_by, deadline)
        async with self._holding(slot, window.start_by):
            path = self._usable_path(session_id)
            body = await self._request(GET_SESSION, path, None, window)
        try:
            session = parse_session(body)
        except ValidationError as exc:
            self.count_bad(GET_SESSION, INVALID_ITEM)
            raise InvalidSession(f"get_session: invalid session: {describe_invalid(exc)}") from None
        if session.session_id != session_id:
            # A misrouted or mixed-up answer: accepting it would export one
            # session's values under another's ID.
            self.count_bad(GET_SESSION, WRONG_SESSION)
            raise BadResponse(
                f"get_session: asked for session {preview(session_id)}, "
                f"the answer is about session {preview(session.session_id)}"
            )
        return self._checked(GET_SESSION, session)

    def _usable_path(self, session_id: str) -> str:
        """The session's path, or `UnusableSessionId` (counted) when no URL can carry it."""
        problem = _id_problem(session_id)
        if problem is None:
            path = session_path(session_id)
            try:
                self._http.build_request("GET", path)
            except httpx.InvalidURL:
                problem = "it does not fit in a URL"
        if problem is None:
            return path
        self.count_bad(GET_SESSION, UNUSABLE_ID)
        shown = preview(session_id)
        raise UnusableSessionId(f"get_session: cannot ask for session {shown}: {problem}")

    async def list_sessions(
        self,
        *,
        page: int,
        page_size: int,
        only_active: bool,
        include_system: bool,
        deadline: float,
        start_by: float | None = None,
        slot: RequestSlot | None = None,
    ) -> ListPage:
        """One page of `GET /sessions/`; invalid items are skipped, logged and counted.

        `include_system` is always sent: the API's default is true, which would
        export its system sessions to anyone who did not ask for them.
        """
        params = {
            "page": str(page),
            "page_size": str(page_size),
            "only_active": "true" if only_active else "false",
            "include_system": "true" if include_system else "false",
        }
        window = _Window(deadline if start_by is None else start_by, deadline)
        async with self._holding(slot, window.start_by):
            body = await self._request(LIST_SESSIONS, "/sessions/", params, window)
        items, has_next = self._page_items(body)
        sessions: list[Session] = []
        for index, item in enumerate(items):
            try:
                sessions.append(self._checked(LIST_SESSIONS, parse_session(item)))
            except ValidationError as exc:
                self.count_bad(LIST_SESSIONS, INVALID_ITEM)
                log.warning(
                    "skipping an invalid session in the list: page %d item %d: %s",
                    page,
                    index,
                    describe_invalid(exc),
                )
        return ListPage(sessions, len(items), has_next)

    def _page_items(self, body: Any) -> tuple[list[Any], bool | None]:
        """Both list shapes: a bare JSON list, or the API's page object (`items`, `page`,
        `page_size`, `has_next`, `has_previous`); only `items` and `has_next` are used."""
        if isinstance(body, list):
            return body, None
        if isinstance(body, dict) and isinstance(body.get("items"), list):
            has_next = body.get("has_next")
            return body["items"], has_next if isinstance(has_next, bool) else None
        self.count_bad(LIST_SESSIONS, BAD_SHAPE)
        raise BadResponse("list_sessions: the body is neither a list nor an object with items")

    async def _request(
        self, endpoint: str, path: str, params: dict[str, str] | None, window: _Window
    ) -> Any:
        """GET with retries; returns the decoded JSON body or raises a `NotteError`.

        The caller holds a request slot for the whole of it.

        A retry that the cycle's deadline cuts short raises the failure that
        caused the retry (the API answered 503, it did not time out), and a
        request cut short after waiting out a Retry-After pause is rate limited.
        """
        attempt = 0
        cause: NotteError | None = None
        while True:
            if await self._wait_for_pause(endpoint, window.start_by):
                cause = RateLimited(f"{endpoint}: HTTP 429, paused by Retry-After")
            outcome = await self._attempt(endpoint, path, params, window.deadline)
            if isinstance(outcome, _Decoded):
                return outcome.value
            if outcome.cut_short and cause is not None:
                raise cause
            cause = outcome.error
            delay = self._retry.delay(attempt, self._rng)
            attempt += 1
            if not outcome.retryable or attempt >= self._retry.attempts:
                raise outcome.error
            if self._monotonic() + delay >= window.start_by:
                raise outcome.error
            self._metrics.request_retried(endpoint)
            log.debug("retrying %s in %.2fs after: %s", endpoint, delay, outcome.error)
            await asyncio.sleep(delay)

    async def _attempt(
        self, endpoint: str, path: str, params: dict[str, str] | None, deadline: float
    ) -> _Decoded | _Failure:
        """One request: the decoded body, or the error it ended in (not raised, to retry)."""
        remaining = deadline - self._monotonic()
        if remaining <= 0:
            return _Failure(RequestCut(f"{endpoint}: its deadline has passed"), cut_short=True)
        headers = {"Authorization": f"Bearer {self._api_key.current().get_secret_value()}"}
        started = time.perf_counter()
        code = TRANSPORT_ERROR
        request = self._http.stream("GET", path, params=params, headers=headers)
        cut_short = remaining < self._timeout
        try:
            async with asyncio.timeout(min(self._timeout, remaining)), request as answer:
                code = str(answer.status_code)
                return await self._receive(endpoint, answer)
        except (TimeoutError, httpx.TimeoutException):
            if cut_short:
                code = CUT
                return _Failure(RequestCut(f"{endpoint}: cut by its deadline"), cut_short=True)
            error = ApiUnreachable(f"{endpoint}: {self._host} timed out")
            return _Failure(error, retryable=True)
        except asyncio.CancelledError:
            code = CUT  # at shutdown: the API may still be serving it
            raise
        except httpx.HTTPError as exc:
            return _Failure(ApiUnreachable(self._transport_failure(endpoint, exc)), retryable=True)
        except httpx.InvalidURL as exc:  # not an HTTPError; a bad base URL, say
            return _Failure(ApiUnreachable(f"{endpoint}: cannot build the request URL: {exc}"))
        finally:
            self._record(endpoint, code, started)

    async def _receive(self, endpoint: str, response: httpx.Response) -> _Decoded | _Failure:
        """Read a 2xx body within the cap and decode it; other statuses leave the body unread."""
        status = response.status_code
        if not 200 <= status < 300:
            return self._interpret(endpoint, response)
        try:
            body = await read_body(*_raw_body(response), limit=self._max_response_bytes)
        except BodyTooLarge:
            self.count_bad(endpoint, TOO_LARGE)
            cap = _size(self._max_response_bytes)
            message = f"{endpoint}: HTTP {status}: the answer is larger than the {cap} cap"
            return _Failure(ResponseTooLarge(f"{message} (max_response_bytes); not read further"))
        except BodyUndecodable as exc:
            self.count_bad(endpoint, NOT_JSON)
            return _Failure(BadResponse(f"{endpoint}: HTTP {status}: {exc}"))
        values = body.count(b",") + body.count(b"{") + body.count(b"[")
        if values > self._max_response_bytes // JSON_BYTES_PER_VALUE:
            self.count_bad(endpoint, TOO_LARGE)
            message = f"{endpoint}: HTTP {status}: the answer holds about {values} JSON values,"
            cap = f"max_response_bytes / {JSON_BYTES_PER_VALUE}"
            return _Failure(ResponseTooLarge(f"{message} over the cap ({cap}); not parsed"))
        try:
            return _Decoded(json.loads(body))
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
            self.count_bad(endpoint, NOT_JSON)
            return _Failure(BadResponse(f"{endpoint}: HTTP {status}, body is not JSON"))

    def _interpret(self, endpoint: str, response: httpx.Response) -> _Failure:
        status = response.status_code
        if status in (401, 403):
            return _Failure(Unauthorized(f"{endpoint}: HTTP {status}: the API key was refused"))
        if status == 404:
            return _Failure(NotFound(f"{endpoint}: HTTP 404"))
        if status == 429:
            return _Failure(self._rate_limited(endpoint, response), retryable=True)
        if status >= 500:
            return _Failure(UpstreamError(f"{endpoint}: HTTP {status}"), retryable=True)
        if 300 <= status < 400:
            target = redirect_target(response)
            return _Failure(UpstreamError(f"{endpoint}: HTTP {status} to {target}, not followed"))
        return _Failure(UpstreamError(f"{endpoint}: unexpected HTTP {status}"))

    @property
    def _host(self) -> str:
        url = self._http.base_url
        port = url.port or {"https": 443, "http": 80}.get(url.scheme, 0)
        return f"{url.host}:{port}"

    def _transport_failure(self, endpoint: str, exc: httpx.HTTPError) -> str:
        """What failed, where and why, e.g. `cannot connect to api.notte.cc:443: [Errno 111]
        Connection refused`; never the URL's path or query."""
        doing = "cannot connect to" if isinstance(exc, httpx.ConnectError) else "connection to"
        after = "" if isinstance(exc, httpx.ConnectError) else " failed"
        return f"{endpoint}: {doing} {self._host}{after}: {transport_cause(exc)}"

    def _rate_limited(self, endpoint: str, response: httpx.Response) -> RateLimited:
        pause = parse_retry_after(response.headers.get("Retry-After"), self._clock())
        if pause is not None:
            self._paused_until = max(self._paused_until, self._monotonic() + pause)
            # Debug: the poller logs the failure once when it starts, not once per 429.
            log.debug("rate limited by the Notte API, pausing requests for %.1fs", pause)
            return RateLimited(f"{endpoint}: HTTP 429, Retry-After {pause:.0f}s")
        return RateLimited(f"{endpoint}: HTTP 429")

    async def _wait_for_pause(self, endpoint: str, start_by: float) -> bool:
        """Honour a Retry-After pause (True when it waited); fail at once if it reaches
        past the start-by time."""
        wait = self._paused_until - self._monotonic()
        if wait <= 0:
            return False
        if self._monotonic() + wait >= start_by:
            raise RateLimited(f"{endpoint}: paused by Retry-After for another {wait:.1f}s")
        await asyncio.sleep(wait)
        return True

    def _record(self, endpoint: str, code: str, started: float) -> None:
        self._metrics.request_done(endpoint, code, time.perf_counter() - started)

    def _checked(self, endpoint: str, session: Session) -> Session:
        """Count a status the contract does not know; the session is still exported."""
        if session.status not in STATUSES:
            self.count_bad(endpoint, UNKNOWN_STATUS)
        return session

    def count_bad(self, endpoint: str, kind: str) -> None:
        """Count an answer, or a part of one, that could not be used (its caller's too:
        a schedule that does not read)."""
        self._metrics.bad_data(endpoint, kind)

    # -- the account beyond sessions: functions, runs, the runtime, usage ----------
    # Each takes one of the request slots every request shares (`_call`): the
    # account's requests count against the same `max_concurrency`.

    async def _call(
        self, endpoint: str, path: str, params: dict[str, str] | None, deadline: float
    ) -> Any:
        """One request that starts, and ends, by `deadline`, in a slot of its own."""
        async with self._holding(None, deadline):
            return await self._request(endpoint, path, params, _Window(deadline, deadline))

    async def list_functions(
        self, *, page: int, page_size: int, include_system: bool, deadline: float
    ) -> ItemsPage[Function]:
        """One page of `GET /functions/`; `only_active=true` (functions not deleted) and
        `include_system` are always sent, the API's defaults being undocumented promises."""
        params = _account_params(page, page_size, only_active=True, include_system=include_system)
        body = await self._call(LIST_FUNCTIONS, "/functions/", params, deadline)
        return self._account_page(LIST_FUNCTIONS, body, Function, page)

    async def get_function(self, function_id: str, *, deadline: float) -> FunctionDetail:
        """`GET /functions/{id}`, for its schedule; its download `url` is never read."""
        path = "/functions/" + self._account_segment(GET_FUNCTION, function_id)
        body = await self._call(GET_FUNCTION, path, None, deadline)
        return self._account_object(GET_FUNCTION, body, FunctionDetail)

    async def list_function_runs(
        self, function_id: str, *, page: int, page_size: int, include_system: bool, deadline: float
    ) -> ItemsPage[FunctionRun]:
        """One page of a function's runs of every status (`only_active=false`, sent)."""
        segment = self._account_segment(LIST_FUNCTION_RUNS, function_id)
        params = _account_params(page, page_size, only_active=False, include_system=include_system)
        body = await self._call(LIST_FUNCTION_RUNS, f"/functions/{segment}/runs/", params, deadline)
        return self._account_page(LIST_FUNCTION_RUNS, body, FunctionRun, page)

    async def get_function_run(
        self, function_id: str, run_id: str, *, deadline: float
    ) -> FunctionRun:
        """One run, with `payload_mode=references` so no log or result is downloaded."""
        segments = [self._account_segment(GET_FUNCTION_RUN, i) for i in (function_id, run_id)]
        path = "/functions/{}/runs/{}".format(*segments)
        params = {"payload_mode": "references"}
        body = await self._call(GET_FUNCTION_RUN, path, params, deadline)
        return self._account_object(GET_FUNCTION_RUN, body, FunctionRun)

    async def functions_health(self, *, deadline: float) -> RuntimeHealth:
        """`GET /functions/health`: the functions runtime as the API sees it."""
        body = await self._call(FUNCTIONS_HEALTH, "/functions/health", None, deadline)
        return self._account_object(FUNCTIONS_HEALTH, body, RuntimeHealth)

    async def get_usage(self, *, deadline: float) -> Usage:
        """`GET /usage` for the current period; a 404 is counted as `unavailable`."""
        try:
            body = await self._call(GET_USAGE, "/usage", None, deadline)
        except NotFound:
            self.count_bad(GET_USAGE, UNAVAILABLE)
            raise
        return self._account_object(GET_USAGE, body, Usage)

    def _account_segment(self, endpoint: str, identifier: str) -> str:
        """An ID as one path segment, or `UnusableSessionId` (counted) when none can carry it."""
        problem = _id_problem(identifier)
        if problem is not None:
            self.count_bad(endpoint, UNUSABLE_ID)
            raise UnusableSessionId(f"{endpoint}: cannot ask for {preview(identifier)}: {problem}")
        return quote(identifier, safe="").replace(".", "%2E")

    def _account_object(self, endpoint: str, body: Any, model: type[_Model]) -> _Model:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            self.count_bad(endpoint, BAD_SHAPE)
            raise BadResponse(
                f"{endpoint}: the answer does not fit: {describe_invalid(exc)}"
            ) from None

    def _account_page(
        self, endpoint: str, body: Any, model: type[_Model], page: int
    ) -> ItemsPage[_Model]:
        """A page object (or a bare list); invalid items are skipped, logged and counted."""
        if isinstance(body, list):
            raw, has_next = body, None
        elif isinstance(body, dict) and isinstance(body.get("items"), list):
            raw, has_next = body["items"], body.get("has_next")
        else:
            self.count_bad(endpoint, BAD_SHAPE)
            raise BadResponse(f"{endpoint}: the body is neither a list nor an object with items")
        items: list[_Model] = []
        for index, item in enumerate(raw):
            try:
                items.append(model.model_validate(item))
            except ValidationError as exc:
                self.count_bad(endpoint, INVALID_ITEM)
                log.warning(
                    "%s: skipping an invalid item: page %d item %d: %s",
                    endpoint,
                    page,
                    index,
                    describe_invalid(exc),
                )
        return ItemsPage(tuple(items), len(raw), has_next if isinstance(has_next, bool) else None)


_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True)
class ItemsPage(Generic[_Model]):
    """One page of an account listing: the valid items, how many raw items it held (a
    short page ends the listing), and its `has_next` (None for a bare list)."""

    items: tuple[_Model, ...]
    item_count: int
    has_next: bool | None


def _account_params(
    page: int, page_size: int, *, only_active: bool, include_system: bool
) -> dict[str, str]:
    return {
        "page": str(page),
        "page_size": str(page_size),
        "only_active": "true" if only_active else "false",
        "include_system": "true" if include_system else "false",
    }


@dataclass(frozen=True)
class _Window:
    """No attempt of a request starts after `start_by`; each ends by `deadline`."""

    start_by: float
    deadline: float


@dataclass(frozen=True)
class _Decoded:
    value: Any


@dataclass(frozen=True)
class _Failure:
    error: NotteError
    retryable: bool = False
    cut_short: bool = False  # by the cycle's deadline, not by the request timeout


def _raw_body(response: httpx.Response) -> tuple[AsyncIterator[bytes], str, str | None]:
    """The body's raw chunks, its Content-Encoding and Content-Length.

    A response built in memory (`httpx.MockTransport` in tests) arrives already
    read and decoded; it goes through the same cap as one chunk.
    """
    if response.is_stream_consumed:
        return _one(response.content), "", None
    headers = response.headers
    return response.aiter_raw(), headers.get("Content-Encoding", ""), headers.get("Content-Length")


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def transport_cause(exc: BaseException) -> str:
    """The root cause of a transport error in words: TLS, name resolution, or the OS error.

    httpx wraps httpcore's error, which wraps the socket's; the useful part is
    at the bottom of that chain (`ConnectError` alone names neither cause nor host).
    """
    chain = _causes(exc)
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or cause.reason or str(cause)
            return f"TLS certificate verification failed: {preview(str(detail), 200)}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {preview(str(cause.reason or cause), 200)}"
        if isinstance(cause, socket.gaierror):
            return f"name resolution failed: {preview(str(cause), 200)}"
    for cause in reversed(chain):
        if isinstance(cause, OSError) and isinstance(cause.errno, int) and cause.errno > 0:
            return f"[Errno {cause.errno}] {os.strerror(cause.errno)}"
    text = str(exc)
    return preview(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, 200)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def redirect_target(response: httpx.Response) -> str:
    """Where a redirect points, as scheme://host[:port]/path: no userinfo, no query."""
    location = response.headers.get("Location")
    if not location:
        return "nowhere (no Location header)"
    try:
        url = response.request.url.join(location)
        host = url.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return "an invalid Location"
    port = f":{url.port}" if url.port is not None else ""
    path = url.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    return preview(f"{url.scheme}://{host}{port}{path}", 200)


def _id_problem(session_id: str) -> str | None:
    """Why an ID cannot be asked for, or None."""
    if not session_id:
        return "it is empty"
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        return f"it is longer than {MAX_SESSION_ID_LENGTH} characters"
    if not session_id.isprintable():
        return "it holds control characters"
    return None


def _size(count: int) -> str:
    """Bytes for people: 16 MiB, 64 KiB, or plain bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"
