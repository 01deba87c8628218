"""Fixed label vocabularies: every label value set the exporter exports, declared once.

Each tuple is the one place its values are spelled; the model, the tracker, the
renderer, the self-metrics and the tests import them from here. Series whose
labels come from these tuples are exported from the start, at 0.
"""

from __future__ import annotations

from typing import Final

# Session statuses the API documents (`SessionResponse.status`), in export order.
STATUSES: Final = ("active", "authenticating", "closed", "error", "timed_out")
# Statuses after which a session never changes again.
ENDED_STATUSES: Final = ("closed", "error", "timed_out")
# `SessionResponse.close_reason`; `unknown` also stands for a missing one.
CLOSE_REASONS: Final = ("manual", "idle_timeout", "max_duration", "error", "unknown")
UNKNOWN_CLOSE_REASON: Final = "unknown"

# Where a tracked session came from (`notte_exporter_tracked_sessions{source}`).
SOURCES: Final = ("configured", "discovered")
# Why a session stopped being exported (`notte_exporter_sessions_dropped_total{reason}`).
DROP_REASONS: Final = ("retention", "not_found", "limit")

# The two API operations the exporter calls (`endpoint` label).
GET_SESSION: Final = "get_session"
LIST_SESSIONS: Final = "list_sessions"
ENDPOINTS: Final = (GET_SESSION, LIST_SESSIONS)
# `notte_exporter_polls_total{result}`.
POLL_RESULTS: Final = ("success", "failure")
# `notte_exporter_api_bad_data_total{kind}`: answers or items that could not be used.
BAD_DATA_KINDS: Final = (
    "invalid_item",
    "not_json",
    "bad_shape",
    "unknown_status",
    "wrong_session",
    "too_large",
    "unusable_id",
)
