"""Grafana dashboards for notte-exporter, as code.

`generate.py` builds them with the Grafana Foundation SDK and writes the JSON files
beside it; `queries.py` reads the JSON back and lists every panel query, with the
template variables substituted, so tests can run them against a real Prometheus.
"""
