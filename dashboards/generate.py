"""Build the notte-exporter Grafana dashboards and write them as JSON.

    .venv/bin/python dashboards/generate.py           # rewrite dashboards/*.json
    .venv/bin/python dashboards/generate.py --check   # exit 1 if a file is out of date

One module per dashboard (`overview`, `detail`, `health`, `functions`), built on the shared helpers
of `panels` with the Grafana Foundation SDK (a dev dependency, pinned; see `sdk`).

Conventions, checked by tests/test_dashboards.py: a `datasource` variable (no
import-only `${DS_...}` inputs), a `job` variable used by every selector, stable
uids, a unit and a description on every panel, `$__rate_interval` in every rate,
and links between the dashboards that keep the time range and variables.
After changing a dashboard, also run `deploy/kubernetes/generate.py`, which copies
the JSON into the Kubernetes ConfigMap sources.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script: make `dashboards` and `exporter` importable
    sys.path.insert(0, str(HERE.parent))

from dashboards.detail import session_detail  # noqa: E402
from dashboards.functions import functions_dashboard  # noqa: E402
from dashboards.health import exporter_health  # noqa: E402
from dashboards.overview import sessions_overview  # noqa: E402
from dashboards.panels import TAG  # noqa: E402
from dashboards.sdk import JSONEncoder, dash_model  # noqa: E402

__all__ = ["DASHBOARDS", "TAG", "main", "render"]

DASHBOARDS: dict[str, Callable[[], dash_model.Dashboard]] = {
    "notte-sessions-overview.json": sessions_overview,
    "notte-session-detail.json": session_detail,
    "notte-exporter-health.json": exporter_health,
    "notte-functions.json": functions_dashboard,
}


def render() -> dict[str, str]:
    """Every dashboard file name with its JSON text, exactly as committed."""
    return {
        name: json.dumps(build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only check that the committed files are up to date"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        sys.stderr.write(
            f"out of date: {', '.join(stale)}; run .venv/bin/python dashboards/generate.py\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
