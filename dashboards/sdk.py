"""The Grafana Foundation SDK modules the dashboards use, imported once.

The dashboards use the classic dashboard JSON model: file provisioning and the
Kubernetes Grafana sidecar load it in every Grafana version still in use, whereas the
SDK's `dashboardv2` resources need Grafana 12's new dashboard API. The SDK flags the
classic builder as deprecated at import time; that warning is silenced here, on
purpose, and nowhere else: every dashboard module imports the SDK from this one.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="Prefer using dashboardv2", category=DeprecationWarning
    )
    from grafana_foundation_sdk.builders import (
        bargauge,
        histogram,
        prometheus,
        stat,
        statetimeline,
        table,
        timeseries,
    )
    from grafana_foundation_sdk.builders import common as common_builder
    from grafana_foundation_sdk.builders import dashboard as dash
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as dash_model
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = [
    "JSONEncoder",
    "PromQueryFormat",
    "bargauge",
    "common",
    "common_builder",
    "dash",
    "dash_model",
    "histogram",
    "prometheus",
    "stat",
    "statetimeline",
    "table",
    "timeseries",
]
