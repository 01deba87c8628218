"""Grafana dashboards for notte-exporter, as code.

One module per dashboard (`overview`, `detail`, `health`) on the shared helpers of
`panels` (selectors, colours, `graph`/`single`/tables) and the SDK imports of `sdk`;
`generate.py` builds them and writes the JSON files beside it. `queries.py` reads the
JSON back and lists every panel query, with the template variables substituted, so
tests can run them against a real Prometheus (and prints them when run).
"""
