"""notte-exporter: a Prometheus exporter for Notte cloud-browser sessions."""

__version__ = "0.1.0"
