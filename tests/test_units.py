"""Unit tests of small pure pieces: key source, IDs file, logging, sharding, settings, and the
session model's coercion and bounds."""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from exporter.gil import SWITCH_INTERVAL_SECONDS, hand_the_gil_over_sooner
from exporter.logs import REDACTED, Redactor, configure_logging
from exporter.memory import return_large_buffers_to_the_os
from exporter.notte.apikey import ApiKeyError, ApiKeySource, read_key_file
from exporter.notte.model import Session, parse_session
from exporter.polling.configured import ConfiguredIds, parse_ids_file
from exporter.polling.sharding import owns, shard_of
from exporter.settings import SettingsError, load_settings, parse_listen_address
from exporter.web.http_server import listen_backlog
from tests.process import ExporterProcess

KEY = "sk-unit-0a1b2c3d4e5f"


def test_key_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("first-key\n")
    source = ApiKeySource(path=path)
    assert source.current().get_secret_value() == "first-key"
    path.write_text("second-key-longer\n")
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    assert source.current().get_secret_value() == "second-key-longer"


def test_unreadable_key_file_keeps_the_last_key(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("good-key")
    source = ApiKeySource(path=path)
    path.unlink()
    assert source.current().get_secret_value() == "good-key"


def test_key_file_errors_name_the_file_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("has a space inside")
    with pytest.raises(ApiKeyError) as info:
        read_key_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "space inside" not in str(info.value)
    with pytest.raises(ApiKeyError):
        read_key_file(tmp_path / "missing")


def test_ids_file_ignores_comments_and_blank_lines() -> None:
    assert parse_ids_file("# header\n\n a \nb # trailing\n#c\n") == ["a", "b"]


def test_configured_ids_merge_without_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "ids"
    path.write_text("b\nc\n")
    assert ConfiguredIds(["a", "b"], path).current() == ["a", "b", "c"]


def test_logs_never_show_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    redactor = Redactor()
    ApiKeySource(key=SecretStr(KEY), redactor=redactor)
    configure_logging("debug", "json", redactor=redactor, stream=stream)
    try:
        log = logging.getLogger("exporter.test")
        log.info("header was Bearer %s", KEY)
        try:
            raise RuntimeError(f"failed with {KEY}")
        except RuntimeError:
            log.exception("boom")
        logging.getLogger("httpx").info("HTTP Request: %s", KEY)
    finally:
        configure_logging("info", "text")
    output = stream.getvalue()
    assert KEY not in output
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 2
    assert lines[0]["message"] == f"header was Bearer {REDACTED}"
    assert REDACTED in lines[1]["exception"]


def test_text_logs_are_one_line_per_event() -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)
    try:
        try:
            raise ValueError("x")
        except ValueError:
            logging.getLogger("exporter.test").exception("multi\nline")
    finally:
        configure_logging("info", "text")
    assert len(stream.getvalue().splitlines()) == 1


def test_shard_is_the_contract_hash() -> None:
    # int.from_bytes(sha256(b"abc").digest()[:8], "big") = 0xba7816bf8f01cfea
    assert shard_of("abc", 7) == 0xBA7816BF8F01CFEA % 7
    ids = [f"s{i}" for i in range(300)]
    owners = [sum(owns(i, shard, 3) for shard in range(3)) for i in ids]
    assert owners == [1] * 300
    assert all(owns(i, 0, 1) for i in ids)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0.0.0.0:10027", ("0.0.0.0", 10027)),
        ("[::]:9", ("::", 9)),
        (":8080", ("0.0.0.0", 8080)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_address_forms(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(address) == expected


def test_settings_error_never_holds_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTTE_API_KEY", KEY + "\n\x01")
    with pytest.raises(SettingsError) as info:
        load_settings({})
    assert "NOTTE_API_KEY" in str(info.value)
    assert KEY not in str(info.value)


def test_secret_is_masked_in_settings_repr() -> None:
    settings = load_settings({"api_key": KEY})
    assert KEY not in repr(settings)
    assert isinstance(settings.api_key, SecretStr)


def parsed(**fields: Any) -> Session:
    return parse_session({"session_id": "s1", "status": "closed", **fields})


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("idle_timeout", "idle_timeout"),
        ("Max_Duration ", "max_duration"),
        ("unknown", "unknown"),
        ("evicted_by_a_future_api", "unknown"),
        (7, "unknown"),
        ({"why": "x"}, "unknown"),
        (None, None),
    ],
)
def test_a_close_reason_outside_the_vocabulary_is_kept_as_unknown(given: Any, kept: Any) -> None:
    assert parsed(close_reason=given).close_reason == kept


@pytest.mark.parametrize(
    "fields",
    [
        {"network_request_bytes": 2**1024},
        {"network_response_bytes": 2**63},
        {"network_request_bytes": -1},
        {"idle_timeout_minutes": 10**400},
        {"timeout_minutes": 1e300},
        {"max_duration_minutes": "inf"},
        {"max_duration_minutes": "nan"},
        {"session_id": ""},
        {"session_id": "x" * 257},
        {"session_id": "line\nbreak"},
        {"session_id": "nul\x00"},
        {"session_id": "c1\x85"},
        {"status": "s" * 65},
        {"steps": "many"},
    ],
)
def test_values_that_could_not_be_exported_make_the_item_invalid(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parsed(**fields)


def test_bounds_keep_every_renderable_value_and_coercion_stays_lax() -> None:
    session = parsed(
        session_id="é" * 256,
        network_request_bytes=2**63 - 1,
        network_response_bytes="42",
        timeout_minutes="2.5",
        max_duration_minutes=None,
        proxies="true",
    )
    assert session.network_request_bytes == 2**63 - 1
    assert session.network_response_bytes == 42
    assert session.idle_timeout_minutes == 2.5
    assert session.max_duration_minutes == 15
    assert session.proxies is True


def test_the_gil_is_handed_over_after_a_millisecond() -> None:
    default = sys.getswitchinterval()
    try:
        hand_the_gil_over_sooner()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)
    finally:
        sys.setswitchinterval(default)


FREEZE_IN_A_FRESH_PROCESS = """
import gc, weakref
from exporter.pauses import freeze_what_lives_forever
class Cycle: pass
garbage = Cycle()
garbage.me = garbage
collected = weakref.ref(garbage)
del garbage
moved = freeze_what_lives_forever()
print(moved, gc.get_freeze_count(), len(gc.get_objects(generation=2)), collected() is None)
"""


def test_what_lives_at_start_is_left_out_of_later_collections() -> None:
    """Run in a process of its own: a freeze lasts as long as the process."""
    done = subprocess.run(
        [sys.executable, "-c", FREEZE_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    moved, frozen, left_to_collect, garbage_went_first = done.stdout.split()
    assert int(moved) == int(frozen) > 1000
    assert int(left_to_collect) < 100
    assert garbage_went_first == "True"


def test_the_exporter_freezes_what_it_built_before_it_serves() -> None:
    with ExporterProcess("--demo", "--log-level", "debug", "--poll-interval", "60") as process:
        process.wait_listening()
        frozen = re.search(r"(\d+) objects left out of garbage collection", process.stderr)
        assert process.stop() == 0
    assert frozen is not None, process.stderr
    assert int(frozen.group(1)) > 10_000


@pytest.mark.parametrize(
    ("written", "backlog"),
    [
        ("4096\n", 4096),
        ("200000\n", 65535),
        ("0\n", 1),
        ("many\n", socket.SOMAXCONN),
        (None, socket.SOMAXCONN),
    ],
)
def test_the_listen_backlog_is_the_systems_cap(
    tmp_path: Path, written: str | None, backlog: int
) -> None:
    somaxconn = tmp_path / "somaxconn"
    if written is not None:
        somaxconn.write_text(written)
    assert listen_backlog(str(somaxconn)) == backlog


def test_large_buffers_go_back_to_the_os_unless_the_operator_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not return_large_buffers_to_the_os()
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert return_large_buffers_to_the_os() is glibc
