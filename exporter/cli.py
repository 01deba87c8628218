"""The command line: parse flags, build settings, run the exporter (or one cycle).

The flags are built from the settings model (`exporter.settings.setting_specs`):
each setting's flag, aliases and help are declared there, once. Only the
flags that are not settings (`--demo`, `--once`) are declared here.

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
from dataclasses import dataclass
from typing import Any, NoReturn

from pydantic import SecretStr

from exporter import __version__
from exporter.app import build_app
from exporter.gil import hand_the_gil_over_sooner
from exporter.logs import Redactor, configure_logging
from exporter.memory import return_large_buffers_to_the_os
from exporter.notte.apikey import ApiKeyError, ApiKeySource
from exporter.pauses import freeze_what_lives_forever
from exporter.settings import (
    Settings,
    SettingsError,
    SettingSpec,
    bad_setting,
    load_settings,
    sends_key_in_clear,
    setting_specs,
)
from exporter.web.webconfig import WebConfigError, WebConfigWatcher

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILED, EXIT_BAD_SETTING = 0, 1, 2
DEMO_API_KEY = "notte-demo-key"
DEMO_SEED = 7


@dataclass(frozen=True)
class FlagOnly:
    """A flag that is not a setting (no variable): its name and help, for the parser and docs."""

    flag: str
    description: str


FLAGS_ONLY = (
    FlagOnly("--demo", "run against a built-in simulated Notte API on loopback, no key needed"),
    FlagOnly("--once", "poll once, print the metrics to stdout, exit (0 on success)"),
)


@dataclass(frozen=True)
class CommandLine:
    """What the command line asked for: settings given as flags (by field name), and modes."""

    flags: dict[str, Any]
    demo: bool
    once: bool


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_SETTING, f"{self.prog}: bad setting: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """One option per setting, from the model, plus the flags that are not settings."""
    parser = _Parser(
        prog="notte-exporter",
        description="Prometheus exporter for Notte cloud-browser sessions.",
        epilog="Every setting is also an environment variable (shown in brackets); "
        "a flag wins over the environment, which wins over a .env file.",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    for spec in setting_specs():
        parser.add_argument(*spec.flags, dest=spec.name, help=_help(spec), **_action(spec))
    for extra in FLAGS_ONLY:
        parser.add_argument(
            extra.flag, action="store_true", default=False, help=_plain(extra.description)
        )
    parser.add_argument("--version", action="version", version=f"notte-exporter {__version__}")
    return parser


def _action(spec: SettingSpec) -> dict[str, Any]:
    if spec.kind == "bool":
        return {"action": argparse.BooleanOptionalAction}
    if spec.kind == "list":  # one item a flag: an ID, a pattern
        return {"action": "append", "metavar": spec.flag.removeprefix("--").split("-")[-1].upper()}
    return {"metavar": spec.env.removeprefix("NOTTE_EXPORTER_").removeprefix("NOTTE_")}


def _help(spec: SettingSpec) -> str:
    shown = _plain(spec.shown_default)
    if shown and not shown.startswith("("):
        shown = f"(default {shown})"
    return " ".join(part for part in (_plain(spec.description), shown, f"[{spec.env}]") if part)


def _plain(markdown: str) -> str:
    """Help text for a terminal: no Markdown backticks, `%` escaped for argparse."""
    return markdown.replace("`", "").replace("%", "%%")


def parse_command_line(argv: Sequence[str] | None = None) -> CommandLine:
    """Parse `argv`; a bad flag exits 2 with one line."""
    args = vars(build_parser().parse_args(argv))
    flags = {spec.name: args[spec.name] for spec in setting_specs() if spec.name in args}
    return CommandLine(flags=flags, demo=args["demo"], once=args["once"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `notte-exporter` script and `python -m exporter`."""
    command = parse_command_line(argv)
    redactor = Redactor()
    try:
        settings = load_settings(command.flags)
        web_config = _web_config(settings)
        api_key = _demo_key(redactor) if command.demo else _api_key_source(settings, redactor)
    except SettingsError as exc:
        print(f"notte-exporter: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    configure_logging(settings.log_level, settings.log_format, redactor=redactor)
    if command.demo:
        with _demo_api(settings) as demo_settings:
            return _run(demo_settings, api_key, web_config, once=command.once)
    return _run(settings, api_key, web_config, once=command.once)


def _web_config(settings: Settings) -> WebConfigWatcher | None:
    if settings.web_config_file is None:
        return None
    try:
        return WebConfigWatcher(settings.web_config_file)
    except WebConfigError as exc:
        # The error reads "web config <path>: <cause>"; the setting's names replace the prefix.
        raise bad_setting("web_config_file", str(exc).removeprefix("web config ")) from None


def _api_key_source(settings: Settings, redactor: Redactor) -> ApiKeySource:
    if settings.api_key_file is not None:
        try:
            return ApiKeySource(path=settings.api_key_file, redactor=redactor)
        except ApiKeyError as exc:
            raise bad_setting("api_key_file", str(exc)) from None
    if settings.api_key is not None:
        return ApiKeySource(key=settings.api_key, redactor=redactor)
    raise bad_setting(
        "api_key", "required; or set NOTTE_API_KEY_FILE (--api-key-file), or run with --demo"
    )


def _demo_key(redactor: Redactor) -> ApiKeySource:
    return ApiKeySource(key=SecretStr(DEMO_API_KEY), redactor=redactor)


def _run(
    settings: Settings, api_key: ApiKeySource, web_config: WebConfigWatcher | None, *, once: bool
) -> int:
    if sends_key_in_clear(settings.api_url):
        log.warning(
            "the API URL %s is plain http:// to a host other than loopback: the API key "
            "crosses the network (and any proxy) unencrypted; use https://",
            settings.api_url,
        )
    return_large_buffers_to_the_os()
    hand_the_gil_over_sooner()
    app = build_app(settings, api_key, web_config=web_config)
    if once:
        succeeded = asyncio.run(app.poll_once())
        sys.stdout.buffer.write(app.exposition.body(openmetrics=False, gzip=False))
        sys.stdout.flush()
        if not succeeded:
            print("notte-exporter: the poll cycle failed (see the log above)", file=sys.stderr)
        return EXIT_OK if succeeded else EXIT_FAILED
    log.debug("%d objects left out of garbage collection", freeze_what_lives_forever())
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
