"""The command line: parse flags, build settings, run the exporter (or one cycle).

Exit status: 0 on a clean stop (and for a successful `--once`), 1 when
`--once` could not complete its cycle or the server cannot start, 2 for a bad
setting, reported as one line on stderr naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from pydantic import SecretStr

from exporter import __version__
from exporter.apikey import ApiKeyError, ApiKeySource
from exporter.app import build_app
from exporter.logs import configure_logging
from exporter.settings import SETTING_NAMES, Settings, SettingsError, load_settings
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILED, EXIT_BAD_SETTING = 0, 1, 2
DEMO_API_KEY = "notte-demo-key"
DEMO_SEED = 7

HELP: dict[str, str] = {
    "api_key": "the Notte API key (required unless --demo)",
    "api_key_file": "read the API key from this file (re-read when it changes)",
    "api_url": "Notte API base URL (default https://api.notte.cc)",
    "listen_address": "where /metrics is served, host:port or [::]:port (default 0.0.0.0:10027)",
    "session_ids": "a session ID to watch; repeat for more (replaces the variable's list)",
    "session_ids_file": "file of session IDs, one a line, # comments; re-read every poll",
    "discovery": "discover active sessions through the list endpoint (default on)",
    "include_system": "list system sessions too (default off: sends include_system=false)",
    "sweep": "with discovery, also list the newest sessions of any status each cycle, "
    "so sessions shorter than a poll interval are seen (default on)",
    "poll_interval": "seconds between poll cycles (default 15)",
    "request_timeout": "seconds per API request (default 10)",
    "max_concurrency": "API requests in flight at once (default 8)",
    "page_size": "page_size for the list endpoint, 1 to 100 (default 100)",
    "retention": "seconds an ended, discovered session stays exported (default 900)",
    "max_sessions": "cap on tracked sessions (default 10000)",
    "max_response_bytes": "cap on one API answer's body after decompression (default 16777216)",
    "shard": "this replica's shard, 0-based (default 0)",
    "total_shards": "number of replicas sharing the sessions (default 1)",
    "web_config_file": "TLS and basic auth, in the Prometheus exporter-toolkit web-config format",
    "log_level": "debug, info, warning or error (default info)",
    "log_format": "text or json (default text)",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_SETTING, f"{self.prog}: bad setting: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="notte-exporter",
        description="Prometheus exporter for Notte cloud-browser sessions.",
        epilog="Every setting is also an environment variable (shown in brackets); "
        "a flag wins over the environment, which wins over a .env file.",
        argument_default=argparse.SUPPRESS,
    )
    for field, (env_name, flag) in SETTING_NAMES.items():
        kwargs: dict[str, Any] = {"dest": field, "help": f"{HELP[field]} [{env_name}]"}
        if field in ("discovery", "include_system", "sweep"):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif field == "session_ids":
            kwargs.update(action="append", metavar="ID")
        elif field in ("log_level", "log_format"):
            kwargs["metavar"] = "LEVEL" if field == "log_level" else "FORMAT"
        parser.add_argument(flag, **kwargs)
    parser.add_argument(
        "--demo",
        action="store_true",
        default=False,
        help="run against a built-in simulated Notte API on loopback; no key needed",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        default=False,
        help="poll once, print the metrics to stdout and exit (0 on success, 1 on failure)",
    )
    parser.add_argument("--version", action="version", version=f"notte-exporter {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `notte-exporter` script and `python -m exporter`."""
    args = build_parser().parse_args(argv)
    flags = {name: value for name, value in vars(args).items() if name in SETTING_NAMES}
    try:
        settings = load_settings(flags)
        web_config = load_web_config(settings.web_config_file) if settings.web_config_file else None
        if not args.demo:
            api_key = _api_key_source(settings)
    except (SettingsError, ApiKeyError, WebConfigError) as exc:
        print(f"notte-exporter: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    if args.demo:
        with _demo_api(settings) as demo_settings:
            return _run(demo_settings, _demo_key(), web_config, once=args.once)
    return _run(settings, api_key, web_config, once=args.once)


def _api_key_source(settings: Settings) -> ApiKeySource:
    if settings.api_key_file is not None:
        return ApiKeySource(path=settings.api_key_file)
    if settings.api_key is not None:
        return ApiKeySource(key=settings.api_key)
    raise SettingsError(
        "bad setting NOTTE_API_KEY (--api-key): required; "
        "or set NOTTE_API_KEY_FILE (--api-key-file), or run with --demo"
    )


def _demo_key() -> ApiKeySource:
    return ApiKeySource(key=SecretStr(DEMO_API_KEY))


def _run(
    settings: Settings, api_key: ApiKeySource, web_config: WebConfig | None, *, once: bool
) -> int:
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=lambda: [api_key.current().get_secret_value()],
    )
    app = build_app(settings, api_key, web_config=web_config)
    if once:
        succeeded = asyncio.run(app.poll_once())
        sys.stdout.buffer.write(app.exposition.body(openmetrics=False, gzip=False))
        sys.stdout.flush()
        if not succeeded:
            print("notte-exporter: the poll cycle failed (see the log above)", file=sys.stderr)
        return EXIT_OK if succeeded else EXIT_FAILED
    try:
        asyncio.run(app.serve())
    except OSError as exc:
        print(f"notte-exporter: cannot serve on {settings.listen_address}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


@contextmanager
def _demo_api(settings: Settings) -> Iterator[Settings]:
    """Start the simulator on loopback and point the settings at it."""
    from exporter.simulator import DEMO_TICK_SECONDS, ENDED, SimulatorServer, demo_world

    world = demo_world(DEMO_SEED)
    ended_ids = [i for status in ENDED for i in world.session_ids(status)]
    server = SimulatorServer(world, api_key=DEMO_API_KEY, tick_interval=DEMO_TICK_SECONDS)
    server.start()
    try:
        yield settings.model_copy(
            update={
                "api_url": server.url,
                "api_key": None,
                "api_key_file": None,
                "session_ids": [*settings.session_ids, *ended_ids],
            }
        )
    finally:
        server.stop()
