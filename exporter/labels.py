"""Fixed label vocabularies: every label value set the exporter exports, declared once.

Each value is spelled here only, in its tuple; the model, the client, the
tracker, the renderer, the self-metrics, the simulator and the tests import the
tuple or the names unpacked from it. Series whose labels come from these tuples
are exported from the start, at 0.
"""

from __future__ import annotations

from typing import Final

# Session statuses the API documents (`SessionResponse.status`), in export order;
# `authenticating` (waiting for a managed-auth login) is live, like `active`.
STATUSES: Final = ("active", "authenticating", "closed", "error", "timed_out")
ACTIVE, AUTHENTICATING, CLOSED, ERROR, TIMED_OUT = STATUSES
# Statuses after which a session never changes again.
ENDED_STATUSES: Final = (CLOSED, ERROR, TIMED_OUT)

# `SessionResponse.close_reason`; `unknown` also stands for a missing one.
CLOSE_REASONS: Final = ("manual", "idle_timeout", "max_duration", "error", "unknown")
MANUAL, IDLE_TIMEOUT, MAX_DURATION, ERROR_CLOSE, UNKNOWN_CLOSE_REASON = CLOSE_REASONS

# Where a tracked session came from (`notte_exporter_tracked_sessions{source}`).
SOURCES: Final = ("configured", "discovered")
CONFIGURED, DISCOVERED = SOURCES

# Why a session stopped being exported (`notte_exporter_sessions_dropped_total{reason}`).
DROP_REASONS: Final = ("retention", "not_found", "limit")
RETENTION, NOT_FOUND, LIMIT = DROP_REASONS

# The API operations the exporter calls (`endpoint` label): the sessions' two, then the
# account's (functions, their runs, the functions runtime, usage).
ENDPOINTS: Final = (
    "get_session",
    "list_sessions",
    "list_functions",
    "get_function",
    "list_function_runs",
    "get_function_run",
    "functions_health",
    "get_usage",
)
(
    GET_SESSION,
    LIST_SESSIONS,
    LIST_FUNCTIONS,
    GET_FUNCTION,
    LIST_FUNCTION_RUNS,
    GET_FUNCTION_RUN,
    FUNCTIONS_HEALTH,
    GET_USAGE,
) = ENDPOINTS
# `notte_exporter_api_requests_total{code}`: the HTTP status, or one of these: a transport
# failure, or a request the exporter gave up on while the API may still have been serving it
# (cut by its deadline, or at shutdown): work thrown away, 0 in a healthy run.
TRANSPORT_ERROR: Final = "error"
CUT: Final = "cut"

# `notte_exporter_polls_total{result}`.
POLL_RESULTS: Final = ("success", "failure")
SUCCESS, FAILURE = POLL_RESULTS

# `notte_exporter_api_bad_data_total{kind}`: answers or items that could not be used
# (`unknown_status` items are kept and exported, but counted).
BAD_DATA_KINDS: Final = (
    "invalid_item",
    "not_json",
    "bad_shape",
    "unknown_status",
    "wrong_session",
    "too_large",
    "unusable_id",
    "bad_schedule",
    "unavailable",
)
# `bad_schedule`: a function's schedule expression that cannot be read (no next-run series);
# `unavailable`: an account endpoint the API answers 404 for (`/usage` on some deployments).
(
    INVALID_ITEM,
    NOT_JSON,
    BAD_SHAPE,
    UNKNOWN_STATUS,
    WRONG_SESSION,
    TOO_LARGE,
    UNUSABLE_ID,
    BAD_SCHEDULE,
    UNAVAILABLE,
) = BAD_DATA_KINDS

# Function run statuses (`FunctionRunListItemResponse.status`); the last two are ended.
RUN_STATUSES: Final = ("active", "closed", "failed")
RUN_ACTIVE, RUN_CLOSED, RUN_FAILED = RUN_STATUSES
RUN_ENDED_STATUSES: Final = (RUN_CLOSED, RUN_FAILED)

# A function's schedule state (`FunctionWithLinkResponse.schedule_state`; null: no schedule).
SCHEDULE_STATES: Final = ("enabled", "paused")
SCHEDULE_ENABLED, SCHEDULE_PAUSED = SCHEDULE_STATES

# The functions runtime (`FunctionRuntimeHealthResponse.status`).
RUNTIME_STATUSES: Final = ("ok", "degraded", "unreachable")
RUNTIME_OK, RUNTIME_DEGRADED, RUNTIME_UNREACHABLE = RUNTIME_STATUSES

# `notte_usage_cost{kind}`, `notte_usage_balance{kind}`, `notte_usage_limit{kind}`.
COST_KINDS: Final = ("browser", "proxy", "llm", "function", "total")
BALANCE_KINDS: Final = ("subscription", "topup", "total")
LIMIT_KINDS: Final = ("subscription", "topup")
