"""Metrics: the families and how `/metrics` is written.

`catalogue` declares every family derived from a snapshot, once; `metricfilter`
selects the served ones (allow/deny lists); `render` writes them; `exposition`
caches the body per snapshot; `selfmetrics` holds the exporter's own
instruments. May import: `exporter.polling` (the snapshots it renders),
`exporter.notte` and the shared leaves. Imports no web code.
"""
