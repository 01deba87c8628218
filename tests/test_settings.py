"""Settings and the command line: one declaration per setting, the README held to it,
the key file's life (rotation, loss, SIGHUP), and what the log lets through."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from exporter.cli import FLAGS_ONLY, build_parser, parse_command_line
from exporter.logs import REDACTED, Redactor, configure_logging
from exporter.notte.apikey import ApiKeySource
from exporter.settings import (
    load_settings,
    sends_key_in_clear,
    setting_specs,
)
from exporter.simulator import SimulatedNotte, SimulatorServer
from tests.harness import API_KEY, parse_samples, run_cli, value, wait_until
from tests.process import ExporterProcess

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_HEADER = "| environment variable | flag | default | meaning |"


@pytest.fixture
def production_logging() -> Iterator[tuple[io.StringIO, Redactor]]:
    """Logging configured as `main()` does it, into a buffer; put back to plain text after."""
    stream, redactor = io.StringIO(), Redactor()
    configure_logging("info", "text", redactor=redactor, stream=stream)
    try:
        yield stream, redactor
    finally:
        configure_logging("info", "text")


# --- one declaration per setting ---------------------------------------------------------


def readme_settings_rows() -> list[list[str]]:
    """The cells of the README's settings table, in order."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(TABLE_HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_the_readme_settings_table_is_the_model() -> None:
    rows = readme_settings_rows()
    assert all(len(row) == 4 for row in rows), rows
    settings_rows = [row for row in rows if row[0]]
    assert [row[0].strip("`") for row in settings_rows] == [s.env for s in setting_specs()]
    for (_, flags, default, meaning), spec in zip(settings_rows, setting_specs(), strict=True):
        expected = set(spec.flags)
        if spec.kind == "bool":
            expected.add("--no-" + spec.flag.removeprefix("--"))
        assert set(re.findall(r"`(--[^`]+)`", flags)) == expected, spec.name
        assert ("(repeatable)" in flags) == (spec.kind == "list"), spec.name
        assert default == spec.shown_default, spec.name
        assert meaning == spec.description, spec.name
    flag_rows = [row for row in rows if not row[0]]
    assert [(row[1].strip("`"), row[3]) for row in flag_rows] == [
        (extra.flag, extra.description) for extra in FLAGS_ONLY
    ]


def test_help_lists_every_setting_with_its_variable_and_help() -> None:
    text = " ".join(build_parser().format_help().split())
    for spec in setting_specs():
        for flag in spec.flags:
            assert flag in text
        assert f"[{spec.env}]" in text
        assert " ".join(spec.description.replace("`", "").split()) in text
    for extra in FLAGS_ONLY:
        assert extra.flag in text


def test_booleans_take_a_no_form_and_aliases_reach_their_setting() -> None:
    command = parse_command_line(
        [
            "--no-discovery",
            "--include-system",
            "--no-sweep",
            "--web.listen-address",
            "127.0.0.1:9",
            "--web.config.file",
            "web.yml",
            "--log.level",
            "debug",
            "--log.format",
            "json",
        ]
    )
    assert command.flags == {
        "discovery": False,
        "include_system": True,
        "sweep": False,
        "listen_address": "127.0.0.1:9",
        "web_config_file": "web.yml",
        "log_level": "debug",
        "log_format": "json",
    }
    assert not command.demo
    assert not command.once


def test_flags_not_given_leave_the_environment_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTTE_EXPORTER_DISCOVERY", "false")
    monkeypatch.setenv("NOTTE_API_KEY", API_KEY)
    settings = load_settings(parse_command_line(["--once"]).flags)
    assert settings.discovery is False


def test_only_the_notte_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHARD", "1")
    monkeypatch.setenv("TOTAL_SHARDS", "3")
    settings = load_settings({"api_key": API_KEY})
    assert (settings.shard, settings.total_shards) == (0, 1)


def test_a_cleartext_api_url_is_flagged_unless_loopback() -> None:
    assert sends_key_in_clear("http://api.example.com")
    assert sends_key_in_clear("http://10.0.0.5:8080")
    for url in ("https://api.notte.cc", "http://127.0.0.1:9", "http://[::1]:9", "http://localhost"):
        assert not sends_key_in_clear(url), url


def test_a_cleartext_api_url_warns_at_start_and_a_proxy_carries_the_requests(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    # httpx honours HTTP_PROXY: the fake API, as the proxy, receives the request for a host
    # that does not exist, with the key in clear. Nothing leaves the loopback interface.
    result = run_cli(
        "--once",
        "--api-url",
        "http://notte.example:9",
        env={"NOTTE_API_KEY": API_KEY, "HTTP_PROXY": api.url, "NO_PROXY": ""},
        timeout=30,
    )
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert any("unencrypted" in line and "notte.example" in line for line in warnings)
    assert world.requests_total() >= 1
    assert API_KEY not in result.stderr


# --- the key: pushed into the log filter, kept through a bad file ------------------------


def test_a_lost_key_file_keeps_the_last_key_with_one_warning(
    tmp_path: Path, production_logging: tuple[io.StringIO, Redactor]
) -> None:
    stream, redactor = production_logging
    path = tmp_path / "key"
    path.write_text(API_KEY + "\n")
    source = ApiKeySource(path=path, redactor=redactor)
    path.unlink()
    for _ in range(50):  # one call per API request
        assert source.current().get_secret_value() == API_KEY
    path.write_text("")  # back, but empty (a rotation caught half-way)
    for _ in range(5):
        assert source.current().get_secret_value() == API_KEY
    path.write_text("sk-the-new-key\n")
    assert source.current().get_secret_value() == "sk-the-new-key"
    logging.getLogger("exporter.test").info("old %s new %s", API_KEY, "sk-the-new-key")
    lines = stream.getvalue().splitlines()
    warnings = [line for line in lines if " WARNING " in line]
    assert len(warnings) == 2, lines  # missing, then empty: each once
    assert "No such file" in warnings[0]
    assert "empty" in warnings[1]
    assert any("readable again" in line for line in lines)
    assert f"old {REDACTED} new {REDACTED}" in lines[-1]
    assert API_KEY not in stream.getvalue()


def test_reload_reads_the_key_file_even_when_it_looks_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("sk-aaaa-1")
    source = ApiKeySource(path=path)
    stat = path.stat()
    path.write_text("sk-bbbb-2")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.current().get_secret_value() == "sk-aaaa-1"
    source.reload()
    assert source.current().get_secret_value() == "sk-bbbb-2"


def test_a_deleted_key_file_never_stops_the_exporter(
    world: SimulatedNotte, api: SimulatorServer, tmp_path: Path
) -> None:
    """The issue-11 crash: the key file vanished, and the log filter asking the key source
    for the key recursed until the process died."""
    world.add_session("a1")
    key_file = tmp_path / "notte-key"
    key_file.write_text(API_KEY + "\n")
    env = {"NOTTE_API_URL": api.url, "NOTTE_API_KEY_FILE": str(key_file)}
    with ExporterProcess("--poll-interval", "0.2", env=env) as process:
        process.wait_listening()
        wait_until(lambda: world.requests_total() >= 1)
        key_file.unlink()
        world.reset_requests()
        wait_until(lambda: world.requests_total() >= 10)  # several cycles without the file
        assert process.process.poll() is None, process.stderr
        assert all(record.authorised for record in world.request_log())
        key_file.write_text(API_KEY + "\n")
        wait_until(lambda: "readable again" in process.stderr)
        returncode = process.stop()
        stderr = process.stderr
    assert returncode == 0, stderr
    assert stderr.count("cannot read the API key file") == 1, stderr
    assert "Traceback" not in stderr
    assert API_KEY not in stderr


def test_sighup_re_reads_the_key_file_and_keeps_running(
    world: SimulatedNotte, api: SimulatorServer, tmp_path: Path
) -> None:
    world.add_session("a1")
    key_file = tmp_path / "notte-key"
    key_file.write_text("sk-test-0000000000aa\n")  # a wrong key, as long as the right one
    stat = key_file.stat()
    env = {"NOTTE_API_URL": api.url, "NOTTE_API_KEY_FILE": str(key_file)}
    with ExporterProcess("--poll-interval", "0.2", env=env) as process:
        url = process.wait_listening()
        wait_until(lambda: world.requests_total() >= 2)
        # The right key, written so that the file looks unchanged: only SIGHUP picks it up.
        key_file.write_text(API_KEY + "\n")
        os.utime(key_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        process.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP" in process.stderr)
        wait_until(lambda: _metric(url, "notte_up") == 1)
        assert process.process.poll() is None
        returncode = process.stop()
        stderr = process.stderr
    assert returncode == 0, stderr
    assert len([line for line in stderr.splitlines() if "SIGHUP" in line]) == 1


def _metric(url: str, name: str) -> float | None:
    import httpx

    return value(parse_samples(httpx.get(url + "/metrics", timeout=5).text), name)


# --- the log ----------------------------------------------------------------------------


def test_text_logs_escape_control_characters(
    production_logging: tuple[io.StringIO, Redactor],
) -> None:
    stream, _ = production_logging
    hostile = "s1\r\n2026-01-01 00:00:00 ERROR forged\x1b[31m\x00\x85\u2028end"
    log = logging.getLogger("exporter.test")
    log.warning("session %s ended", hostile)
    try:
        raise ValueError(hostile)
    except ValueError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "s1\\r\\n2026-01-01 00:00:00 ERROR forged\\x1b[31m\\x00\\x85\\u2028end" in lines[0]
    assert "\x1b" not in stream.getvalue()
    assert "\x00" not in stream.getvalue()
    assert "ValueError: s1\\r | 2026" in lines[1]  # a traceback's line breaks are " | "


def test_json_logs_keep_control_characters_inside_the_string() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    try:
        logging.getLogger("exporter.test").warning("id %s", "a\r\nb\x1b")
    finally:
        configure_logging("info", "text")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "id a\r\nb\x1b"


def test_a_fixed_key_is_masked_once_pushed(
    production_logging: tuple[io.StringIO, Redactor],
) -> None:
    stream, redactor = production_logging
    ApiKeySource(key=SecretStr(API_KEY), redactor=redactor)
    logging.getLogger("exporter.test").warning("Bearer %s", API_KEY)
    assert stream.getvalue().rstrip().endswith(f"Bearer {REDACTED}")


def test_a_log_call_with_bad_arguments_neither_raises_nor_shows_them(
    production_logging: tuple[io.StringIO, Redactor],
) -> None:
    stream, _ = production_logging
    logging.getLogger("exporter.test").warning("two %s %s", API_KEY)
    assert "unformattable log message" in stream.getvalue()
    assert API_KEY not in stream.getvalue()
