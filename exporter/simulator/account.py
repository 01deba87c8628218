"""The simulated account beyond sessions: functions, their runs, the runtime, usage.

Objects are the raw JSON the API returns, shaped as the SDK's generated models
(`FunctionListItemResponse`, `FunctionWithLinkResponse`,
`FunctionRunListItemResponse`, `GetFunctionRunResponse`,
`FunctionRuntimeHealthResponse`, `UsageResponse`), which the conformance tests
hold them to. `SimulatedAccount` is not thread-safe on its own: `SimulatedNotte`
calls it under its lock, and lends it two hooks so a run drives a real
simulated browser session (started with the run, closed or errored with it).

Life (`tick`): a scheduled function fires at its schedule's times, an
unscheduled one now and then; a run lasts seconds to minutes and ends closed or
failed; the period's costs grow with the work and the balance falls with them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from exporter.labels import RUN_ACTIVE, RUN_CLOSED, RUN_FAILED, SCHEDULE_ENABLED
from exporter.polling.schedule import BadSchedule, parse_schedule

FUNCTION_ACTIVE: Final = "active"  # `status` of a function that is not deleted
MANUAL_RUN_RATE: Final = 1 / 40  # runs per second of an unscheduled function
RUN_SECONDS: Final = (5.0, 150.0)
RUN_FAILURE: Final = 0.25
# Cost per second of a running function's session, in the account's currency.
COSTS_PER_SECOND: Final = {"browser": 0.0008, "proxy": 0.0002, "llm": 0.0015, "function": 0.0005}
# How a period's spending splits between the kinds, for a period already under way.
COST_SHARES: Final = {"browser": 0.3, "proxy": 0.075, "llm": 0.5, "function": 0.125}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


@dataclass
class _Run:
    data: dict[str, Any]
    ends_at: float
    fails: bool


@dataclass
class _Function:
    data: dict[str, Any]  # the detail object (`FunctionWithLinkResponse`) without `url`
    runs: list[_Run] = field(default_factory=list)
    next_fire: float | None = None
    by_hand: bool = False  # without a schedule, someone starts a run now and then


LIST_FIELDS: Final = (
    "function_id",
    "workflow_id",
    "created_at",
    "updated_at",
    "latest_version",
    "versions",
    "status",
    "name",
    "description",
    "default_runtime",
    "shared",
    "published",
    "source",
    "domain",
    "self_healing",
    "variables",
    "required_secrets",
    "sdk_generation",
    "upload_sdk_version",
    "reference_workflow_id",
)
RUN_LIST_FIELDS: Final = (
    "function_id",
    "function_run_id",
    "workflow_id",
    "workflow_run_id",
    "created_at",
    "updated_at",
    "status",
    "session_id",
    "local",
)


class SimulatedAccount:
    """Functions with runs, a runtime health answer and a usage period."""

    def __init__(
        self,
        rng: random.Random,
        clock: Callable[[], float],
        *,
        start_session: Callable[[float], str],
        end_session: Callable[[str, bool, float], None],
    ) -> None:
        self._rng = rng
        self._clock = clock
        self._start_session = start_session
        self._end_session = end_session
        self._functions: dict[str, _Function] = {}
        self.health: dict[str, Any] = healthy_runtime()
        self.usage: Any = None  # None: `/usage` answers 404
        self._usage_override = False

    # -- building ------------------------------------------------------------
    def add_function(
        self,
        function_id: str | None = None,
        *,
        name: str | None = None,
        schedule_cron: str | None = None,
        schedule_state: str | None = None,
        by_hand: bool = False,
        **fields: Any,
    ) -> dict[str, Any]:
        """A function; `by_hand`: the life starts runs of it now and then (a schedule's
        runs start at its times)."""
        now = self._clock()
        fid = function_id or f"{self._rng.getrandbits(128):032x}"
        data: dict[str, Any] = {
            "function_id": fid,
            "workflow_id": fid,
            "created_at": _iso(now - 86400 * 3),
            "updated_at": _iso(now - 3600),
            "latest_version": "3",
            "versions": ["1", "2", "3"],
            "status": FUNCTION_ACTIVE,
            "name": name,
            "description": f"Automation {name or fid}",
            "default_runtime": "standard",
            "shared": False,
            "published": False,
            "source": self._rng.choice(("python-sdk", "console", "cli", "rest-api")),
            "domain": "shop.example.com",
            "self_healing": False,
            "variables": None,
            "required_secrets": None,
            "sdk_generation": "v19",
            "upload_sdk_version": None,
            "reference_workflow_id": None,
            "instructions": None,
            "response_format": None,
            "schedule_cron": schedule_cron,
            "schedule_state": schedule_state,
            "schedule_variables": {} if schedule_cron else None,
        }
        data.update(fields)
        function = _Function(data, by_hand=by_hand)
        self._functions[fid] = function
        self._plan_next(function, now)
        return dict(data)

    def update_function(self, function_id: str, **fields: Any) -> None:
        function = self._functions[function_id]
        function.data.update(fields)
        self._plan_next(function, self._clock())

    def delete_function(self, function_id: str) -> None:
        self._functions.pop(function_id, None)

    def start_run(self, function_id: str, seconds: float, fails: bool, session: bool) -> str:
        """Start a run now (with its browser session, if `session`); it ends after
        `seconds` (`inf`: when told)."""
        now = self._clock()
        return self._start(self._functions[function_id], now, seconds, fails, session=session)

    def backfill(self, function_id: str, *, every: float, count: int) -> None:
        """Runs that ended in the past, one each `every` seconds before now (no session)."""
        now = self._clock()
        function = self._functions[function_id]
        for index in range(count, 0, -1):
            started = now - index * every
            length = self._rng.uniform(*RUN_SECONDS) / 4
            self._start(function, started, length, self._rng.random() < RUN_FAILURE, session=False)
            run = function.runs[-1]
            self._finish(run, RUN_FAILED if run.fails else RUN_CLOSED, started + length)

    def end_run(self, function_id: str, run_id: str, status: str = RUN_CLOSED) -> None:
        for run in self._functions[function_id].runs:
            if run.data["function_run_id"] == run_id:
                self._finish(run, status, self._clock())

    def set_usage(self, usage: Any) -> None:
        """Any JSON for `/usage` (None: 404); the life stops changing it."""
        self.usage = usage
        self._usage_override = True

    def start_usage(self, *, balance: float = 42.0) -> None:
        """A usage period in progress, with `balance` left of the limits."""
        now = self._clock()
        self.usage = {
            "plan_type": "pro",
            "period": datetime.fromtimestamp(now, UTC).strftime("%B %Y"),
            "session_count": 137,
            "function_count": len(self._functions),
            "browser_usage_cost": 0.0,
            "proxy_usage_cost": 0.0,
            "llm_usage_cost": 0.0,
            "function_usage_cost": 0.0,
            "total_cost": 0.0,
            "subscription_limit_amount": 50.0,
            "topup_limit_amount": 20.0,
            "subscription_balance_amount": 0.0,
            "topup_balance_amount": 0.0,
            "balance_amount": 0.0,
            "is_usage_limit_exceeded": False,
        }
        spent = usage_total(self.usage) - balance
        self._spend({kind: share * spent for kind, share in COST_SHARES.items()}, spent)

    # -- reading -------------------------------------------------------------
    def functions(self, *, only_active: bool) -> list[dict[str, Any]]:
        """The list items, newest first by creation (the console's order)."""
        chosen = [
            f.data
            for f in self._functions.values()
            if not only_active or f.data.get("status") == FUNCTION_ACTIVE
        ]
        chosen.sort(key=lambda d: (str(d.get("created_at")), str(d["function_id"])), reverse=True)
        return [{name: data.get(name) for name in LIST_FIELDS} for data in chosen]

    def function(self, function_id: str) -> dict[str, Any] | None:
        found = self._functions.get(function_id)
        if found is None:
            return None
        url = f"https://storage.notte.invalid/functions/{function_id}.py?X-Amz-Signature=d3adb33f"
        return {"url": url, **found.data}

    def runs(
        self, function_id: str, *, only_active: bool, order: str
    ) -> list[dict[str, Any]] | None:
        found = self._functions.get(function_id)
        if found is None:
            return None
        runs = [r.data for r in found.runs if not only_active or r.data["status"] == RUN_ACTIVE]
        if order == "shuffled":
            runs = sorted(
                runs, key=lambda d: hashlib.blake2b(d["function_run_id"].encode()).digest()
            )
        else:
            runs = sorted(runs, key=lambda d: d["created_at"], reverse=order == "newest")
        return [{name: data.get(name) for name in RUN_LIST_FIELDS} for data in runs]

    def run(self, function_id: str, run_id: str, *, inline: bool) -> dict[str, Any] | None:
        found = self._functions.get(function_id)
        for run in found.runs if found else ():
            if run.data["function_run_id"] == run_id:
                data = dict(run.data)
                ended = data["status"] != RUN_ACTIVE
                data.update(
                    artifact_sdk_generation="v19",
                    sdk_generation="v19",
                    function_version=found.data.get("latest_version") if found else None,
                    stopped_at=data["updated_at"] if ended else None,
                    logs=["starting", "done"] if inline else None,
                    result='{"ok": true}' if inline and data["status"] == RUN_CLOSED else None,
                    variables=None,
                    payloads=None,
                    payload_urls=None,
                )
                return data
        return None

    # -- life ----------------------------------------------------------------
    def tick(self, seconds: float) -> None:
        now = self._clock()
        spent: dict[str, float] = dict.fromkeys(COSTS_PER_SECOND, 0.0)
        for function in self._functions.values():
            for run in function.runs:
                if run.data["status"] == RUN_ACTIVE:
                    for kind, rate in COSTS_PER_SECOND.items():
                        spent[kind] += rate * seconds
                    if now >= run.ends_at:
                        self._finish(run, RUN_FAILED if run.fails else RUN_CLOSED, run.ends_at)
            if function.data.get("status") != FUNCTION_ACTIVE:
                continue
            if function.next_fire is not None:
                if now >= function.next_fire:
                    self._start(function, now, None, None)
                    self._plan_next(function, now)
            elif function.by_hand and self._rng.random() < MANUAL_RUN_RATE * seconds:
                self._start(function, now, None, None)
        if self.usage is not None and not self._usage_override:
            self._spend(spent, sum(spent.values()))

    def _start(
        self,
        function: _Function,
        now: float,
        seconds: float | None,
        fails: bool | None,
        *,
        session: bool = True,
    ) -> str:
        rng = self._rng
        run_id = f"{rng.getrandbits(128):032x}"
        fid = function.data["function_id"]
        data = {
            "function_id": fid,
            "function_run_id": run_id,
            "workflow_id": fid,
            "workflow_run_id": run_id,
            "created_at": _iso(now),
            "updated_at": _iso(now),
            "status": RUN_ACTIVE,
            "session_id": self._start_session(now) if session else None,
            "local": False,
        }
        length = seconds if seconds is not None else rng.uniform(*RUN_SECONDS)
        failing = fails if fails is not None else rng.random() < RUN_FAILURE
        function.runs.append(_Run(data, now + length, failing))
        return run_id

    def _finish(self, run: _Run, status: str, when: float) -> None:
        if run.data["status"] != RUN_ACTIVE:
            return
        run.data.update(status=status, updated_at=_iso(when))
        session_id = run.data.get("session_id")
        if session_id:
            self._end_session(session_id, status == RUN_CLOSED, when)

    def _plan_next(self, function: _Function, now: float) -> None:
        """When an enabled schedule fires next; None for no (or an unreadable) schedule."""
        cron = function.data.get("schedule_cron")
        function.next_fire = None
        if not isinstance(cron, str) or function.data.get("schedule_state") != SCHEDULE_ENABLED:
            return
        try:
            function.next_fire = parse_schedule(cron).next_after(now)
        except BadSchedule:
            return

    def _spend(self, costs: dict[str, float], total: float) -> None:
        usage = self.usage
        for kind, amount in costs.items():
            usage[f"{kind}_usage_cost"] = round(usage[f"{kind}_usage_cost"] + amount, 6)
        usage["total_cost"] = round(usage["total_cost"] + total, 6)
        spent = usage["total_cost"]
        subscription = usage["subscription_limit_amount"]
        topup = usage["topup_limit_amount"]
        usage["subscription_balance_amount"] = round(max(subscription - spent, 0.0), 6)
        usage["topup_balance_amount"] = round(max(topup - max(spent - subscription, 0.0), 0.0), 6)
        usage["balance_amount"] = round(
            usage["subscription_balance_amount"] + usage["topup_balance_amount"], 6
        )
        usage["is_usage_limit_exceeded"] = usage["balance_amount"] <= 0
        usage["function_count"] = len(self._functions)


def usage_total(usage: dict[str, Any]) -> float:
    """The period's whole allowance: the subscription's limit and the top-up's."""
    return float(usage["subscription_limit_amount"] + usage["topup_limit_amount"])


def healthy_runtime() -> dict[str, Any]:
    """`GET /functions/health` of a runtime that answers."""
    return {
        "status": "ok",
        "reachable": True,
        "latency_ms": 23.5,
        "python_version": "3.12.0",
        "packages": None,
        "stdlib_modules": None,
        "reserved_env_names": None,
        "runtime_digest": "sha256:5f1c0ffee",
        "sdk_generation": "v19",
        "source_manifest": None,
        "runner_policy_version": None,
        "runtime_lock_digest": None,
        "error": None,
    }


def unhealthy_runtime(status: str) -> dict[str, Any]:
    """The answer for a runtime that is `degraded` (alive, too old) or `unreachable`."""
    reachable = status != "unreachable"
    answer = healthy_runtime()
    answer.update(
        status=status,
        reachable=reachable,
        latency_ms=180.0 if reachable else None,
        runtime_digest=None,
        error=None if reachable else "runtime did not answer within 5 s",
    )
    return answer
