"""Fixed label vocabularies: every label value set the exporter exports, declared once.

Each value is spelled here only; the model, the client, the tracker, the
renderer, the self-metrics, the simulator and the tests import the names. Series
whose labels come from these tuples are exported from the start, at 0.
"""

from __future__ import annotations

from typing import Final

# Session statuses the API documents (`SessionResponse.status`), in export order.
ACTIVE: Final = "active"
AUTHENTICATING: Final = "authenticating"  # waiting for a managed-auth login; live
CLOSED: Final = "closed"
ERROR: Final = "error"
TIMED_OUT: Final = "timed_out"
STATUSES: Final = (ACTIVE, AUTHENTICATING, CLOSED, ERROR, TIMED_OUT)
# Statuses after which a session never changes again.
ENDED_STATUSES: Final = (CLOSED, ERROR, TIMED_OUT)

# `SessionResponse.close_reason`; `unknown` also stands for a missing one.
MANUAL: Final = "manual"
IDLE_TIMEOUT: Final = "idle_timeout"
MAX_DURATION: Final = "max_duration"
ERROR_CLOSE: Final = "error"
UNKNOWN_CLOSE_REASON: Final = "unknown"
CLOSE_REASONS: Final = (MANUAL, IDLE_TIMEOUT, MAX_DURATION, ERROR_CLOSE, UNKNOWN_CLOSE_REASON)

# Where a tracked session came from (`notte_exporter_tracked_sessions{source}`).
CONFIGURED: Final = "configured"
DISCOVERED: Final = "discovered"
SOURCES: Final = (CONFIGURED, DISCOVERED)

# Why a session stopped being exported (`notte_exporter_sessions_dropped_total{reason}`).
RETENTION: Final = "retention"
NOT_FOUND: Final = "not_found"
LIMIT: Final = "limit"
DROP_REASONS: Final = (RETENTION, NOT_FOUND, LIMIT)

# The two API operations the exporter calls (`endpoint` label).
GET_SESSION: Final = "get_session"
LIST_SESSIONS: Final = "list_sessions"
ENDPOINTS: Final = (GET_SESSION, LIST_SESSIONS)
# `notte_exporter_api_requests_total{code}`: the HTTP status, or this for a transport failure.
TRANSPORT_ERROR: Final = "error"

# `notte_exporter_polls_total{result}`.
SUCCESS: Final = "success"
FAILURE: Final = "failure"
POLL_RESULTS: Final = (SUCCESS, FAILURE)

# `notte_exporter_api_bad_data_total{kind}`: answers or items that could not be used.
INVALID_ITEM: Final = "invalid_item"
NOT_JSON: Final = "not_json"
BAD_SHAPE: Final = "bad_shape"
UNKNOWN_STATUS: Final = "unknown_status"  # kept and exported, but counted
WRONG_SESSION: Final = "wrong_session"
TOO_LARGE: Final = "too_large"
UNUSABLE_ID: Final = "unusable_id"
BAD_DATA_KINDS: Final = (
    INVALID_ITEM,
    NOT_JSON,
    BAD_SHAPE,
    UNKNOWN_STATUS,
    WRONG_SESSION,
    TOO_LARGE,
    UNUSABLE_ID,
)
