"""The web config file: parsing and its errors, re-reading it, and basic auth.

Real handshakes through the server, for every client_auth_type, are in test_http_server."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import bcrypt
import pytest

from exporter.web.basicauth import BasicAuthVerifier, VerifierBusy
from exporter.web.passwordchecks import check_executor
from exporter.web.webconfig import (
    TLSConfig,
    WebConfigError,
    WebConfigWatcher,
    build_ssl_context,
    load_web_config,
)
from tests.certs import Certs, make_certs
from tests.harness import Clock, reachable_strings


def _hash(password: str, rounds: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


ALICE_PASSWORD = "correct horse battery staple"
ALICE_HASH = _hash(ALICE_PASSWORD)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """The throwaway certificates, plus the server key encrypted with a passphrase."""
    made = make_certs(tmp_path_factory.mktemp("certs"))
    subprocess.run(
        ["openssl", "pkey", "-in", "server.key", "-aes256", "-passout", "pass:hunter2",
         "-out", "enc.key"],
        cwd=made.folder, check=True, capture_output=True,
    )  # fmt: skip
    return made


@pytest.fixture
def config_dir(tmp_path: Path, certs: Certs) -> Path:
    """A folder holding copies of the certificates, for configs with relative paths."""
    for name in ("ca.crt", "server.crt", "server.key", "client.key", "enc.key"):
        shutil.copy(certs.folder / name, tmp_path / name)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    return tmp_path


def _write(folder: Path, text: str, name: str = "web.yml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


# --- loading -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n", "basic_auth_users:\n"])
def test_empty_file_means_no_tls_and_no_auth(tmp_path: Path, text: str) -> None:
    config = load_web_config(_write(tmp_path, text))

    assert config.tls is None
    assert dict(config.basic_auth_users) == {}
    assert dict(config.headers) == {}
    assert not BasicAuthVerifier(config.basic_auth_users).enabled


def test_full_config_with_relative_paths_loads(
    config_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        config_dir,
        f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS12
  max_version: TLS13
http_server_config:
  http2: true
  headers:
    Strict-Transport-Security: max-age=31536000
    x-frame-options: deny
    X-XSS-Protection: 0
    Content-Security-Policy: ""
basic_auth_users:
  alice: {ALICE_HASH}
  "bob": '{_hash("bob's password")}'
""",
    )
    # Relative paths follow the file's folder, not the working directory.
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))

    config = load_web_config(path)

    assert config.tls == TLSConfig(
        cert_file=config_dir / "server.crt",
        key_file=config_dir / "server.key",
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file=config_dir / "ca.crt",
        min_version="TLS12",
        max_version="TLS13",
    )
    assert config.basic_auth_users["alice"] == ALICE_HASH.encode()
    assert set(config.basic_auth_users) == {"alice", "bob"}
    # Names take exporter-toolkit's spelling; a blank value means "not set".
    assert dict(config.headers) == {
        "Strict-Transport-Security": "max-age=31536000",
        "X-Frame-Options": "deny",
        "X-XSS-Protection": "0",
    }
    assert ALICE_HASH not in repr(config)


def test_empty_tls_section_means_no_tls(tmp_path: Path) -> None:
    assert load_web_config(_write(tmp_path, "tls_server_config: {}\n")).tls is None


ERRORS = [
    ("unknown top-level key", "tls_config:\n  cert_file: server.crt\n", "tls_config: unknown key"),
    (
        "unknown nested key",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  ciphers: [x]\n",
        "tls_server_config.ciphers: unknown key",
    ),
    (
        "unknown header section key",
        "http_server_config:\n  header:\n    X-Frame-Options: deny\n",
        "http_server_config.header: unknown key",
    ),
    (
        "exporter-toolkit key this exporter cannot honour",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_allowed_sans: [client]\n",
        "tls_server_config.client_allowed_sans: not supported",
    ),
    ("rate limit", "rate_limit:\n  interval: 1s\n  burst: 5\n", "rate_limit: not supported"),
    ("top level not a mapping", "- a\n- b\n", "top level: must be a mapping"),
    (
        "missing cert file",
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
        "tls_server_config.cert_file: file not found: {dir}/missing.crt",
    ),
    (
        "missing key file",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: missing.key\n",
        "tls_server_config.key_file: file not found: {dir}/missing.key",
    ),
    (
        "cert_file not given",
        "tls_server_config:\n  key_file: server.key\n",
        "tls_server_config.cert_file: required",
    ),
    (
        "cert_file not text",
        "tls_server_config:\n  cert_file: [server.crt]\n  key_file: server.key\n",
        "tls_server_config.cert_file: must be a file name",
    ),
    (
        "cert_file not a certificate",
        "tls_server_config:\n  cert_file: junk.pem\n  key_file: server.key\n",
        "tls_server_config.cert_file: no PEM certificate in {dir}/junk.pem",
    ),
    (
        "key that does not match the certificate",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
        "tls_server_config.key_file: does not match cert_file",
    ),
    (
        "key file that is not a key",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: junk.pem\n",
        "tls_server_config.key_file: no usable PEM private key",
    ),
    (
        "encrypted key (must not prompt on the terminal)",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: enc.key\n",
        "tls_server_config.key_file: {dir}/enc.key is encrypted",
    ),
    (
        "bad client_auth_type",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireCert\n",
        "tls_server_config.client_auth_type: unknown value 'RequireCert'",
    ),
    (
        "bad min_version",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  min_version: TLS1.2\n",
        "tls_server_config.min_version: unknown value 'TLS1.2'",
    ),
    (
        "max_version below min_version",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  min_version: TLS13\n  max_version: TLS12\n",
        "tls_server_config.max_version: TLS12 is below min_version TLS13",
    ),
    (
        "verification without a CA",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.client_ca_file: required by client_auth_type RequireAndVerifyClientCert",
    ),
    (
        "RequireAnyClientCert without a CA (Python verifies every client certificate)",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAnyClientCert\n",
        "tls_server_config.client_ca_file: required by client_auth_type RequireAnyClientCert",
    ),
    (
        "a CA that would never be used",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_ca_file: ca.crt\n",
        "tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert",
    ),
    (
        "client CA file that is not a certificate",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: junk.pem\n",
        "tls_server_config.client_ca_file: no PEM certificate in {dir}/junk.pem",
    ),
    (
        "plaintext password instead of a hash",
        "basic_auth_users:\n  alice: hunter2\n",
        "basic_auth_users.alice: not a bcrypt hash",
    ),
    (
        "another hash scheme",
        "basic_auth_users:\n  alice: $6$saltsalt$9ZcK3LC6fHsu5RCl0pY0MPa9v6Cn5UKjJ0u8GqQm8pI\n",
        "basic_auth_users.alice: not a bcrypt hash",
    ),
    (
        "truncated bcrypt hash",
        f"basic_auth_users:\n  alice: {ALICE_HASH[:-5]}\n",
        "basic_auth_users.alice: not a bcrypt hash",
    ),
    (
        "user name with a colon",
        f"basic_auth_users:\n  'a:b': {ALICE_HASH}\n",
        "basic_auth_users.a:b: no ':' or NUL",
    ),
    (
        "users as a list",
        f"basic_auth_users:\n  - {ALICE_HASH}\n",
        "basic_auth_users: must be a mapping",
    ),
    (
        "forbidden header",
        "http_server_config:\n  headers:\n    Content-Type: text/html\n",
        "http_server_config.headers.Content-Type: cannot be configured",
    ),
    (
        "forbidden auth header",
        "http_server_config:\n  headers:\n    WWW-Authenticate: None\n",
        "http_server_config.headers.WWW-Authenticate: cannot be configured",
    ),
    (
        "header value outside its allowed set",
        "http_server_config:\n  headers:\n    X-Frame-Options: allow-from x\n",
        "http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin",
    ),
    (
        "header value that is not text",
        "http_server_config:\n  headers:\n    Content-Security-Policy: [a, b]\n",
        "http_server_config.headers.Content-Security-Policy: must be printable ASCII text",
    ),
    (
        "http2 not a boolean",
        "http_server_config:\n  http2: sometimes\n",
        "http_server_config.http2: must be true or false",
    ),
    (
        "YAML syntax error",
        "tls_server_config:\n  cert_file: server.crt\n key_file: [server.key\n",
        "not valid YAML at line",
    ),
    (
        "a key given twice",
        f"basic_auth_users:\n  alice: {ALICE_HASH}\n  alice: {ALICE_HASH}\n",
        "not valid YAML at line 3, column 3: duplicate key 'alice'",
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_config_is_one_line_naming_the_key(
    config_dir: Path, case: str, text: str, expected: str
) -> None:
    path = _write(config_dir, text)

    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)

    message = str(caught.value)
    assert message.startswith(f"web config {path}: ")
    assert expected.format(dir=config_dir) in message
    assert "\n" not in message
    assert ALICE_HASH not in message
    assert ALICE_HASH[7:29] not in message  # not even the salt
    assert "hunter2" not in message


def test_missing_web_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        WebConfigError, match=r"web config .*nowhere\.yml: cannot read: No such file"
    ):
        load_web_config(tmp_path / "nowhere.yml")


def test_control_characters_in_names_stay_on_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, 'basic_auth_users:\n  "eve\\nINFO fake log line": nope\n')

    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)

    assert "\n" not in str(caught.value)
    assert "eve\\nINFO" in str(caught.value)


# --- the SSL context -----------------------------------------------------------------------


def test_tls10_minimum_is_honoured_without_a_deprecation_warning(certs: Certs) -> None:
    # pytest runs with filterwarnings=error: Python's DeprecationWarning would fail this.
    context = build_ssl_context(TLSConfig(certs.server_crt, certs.server_key, min_version="TLS10"))

    assert context.minimum_version == ssl.TLSVersion.TLSv1


# --- basic auth ----------------------------------------------------------------------------


def _verifier(**users: str) -> BasicAuthVerifier:
    return BasicAuthVerifier({name: hashed.encode() for name, hashed in users.items()})


def test_right_password_is_accepted() -> None:
    verifier = _verifier(alice=ALICE_HASH)

    assert verifier.enabled
    assert verifier.check(_basic("alice", ALICE_PASSWORD))
    assert verifier.check("basic " + _basic("alice", ALICE_PASSWORD)[6:])  # scheme is caseless


def test_a_2y_hash_from_htpasswd_is_accepted() -> None:
    verifier = _verifier(alice="$2y$" + ALICE_HASH[4:])

    assert verifier.check(_basic("alice", ALICE_PASSWORD))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        _basic("alice", "wrong"),
        _basic("alice", ""),
        _basic("mallory", ALICE_PASSWORD),
        _basic("Alice", ALICE_PASSWORD),
        _basic("alice", ALICE_PASSWORD + "x"),
        _basic("alice", "x" * 100),  # bcrypt >= 5 raises on > 72 bytes: must not escape
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"alice-without-a-colon").decode(),
        "Basic " + base64.b64encode(b"al\0ice:x").decode(),
        "Basic ünïcode",
        "Bearer " + base64.b64encode(f"alice:{ALICE_PASSWORD}".encode()).decode(),
        "Digest username=alice",
    ],
)
def test_bad_credentials_are_refused(header: str | None) -> None:
    assert not _verifier(alice=ALICE_HASH).check(header)


def test_no_users_means_disabled_and_nothing_passes() -> None:
    verifier = BasicAuthVerifier({})

    assert not verifier.enabled
    assert not verifier.check(_basic("alice", ALICE_PASSWORD))


def test_unknown_user_pays_a_bcrypt_check_at_the_highest_cost(checkpw_calls: list[bytes]) -> None:
    costly = _hash("bob's password", rounds=6)
    verifier = _verifier(alice=ALICE_HASH, bob=costly)

    assert not verifier.check(_basic("mallory", "guess"))

    assert checkpw_calls == [costly.encode()]


def test_success_is_cached_and_bcrypt_not_paid_again(checkpw_calls: list[bytes]) -> None:
    verifier = _verifier(alice=ALICE_HASH)
    header = _basic("alice", ALICE_PASSWORD)

    assert verifier.check(header)
    assert verifier.check(header)
    assert verifier.check(header)

    assert len(checkpw_calls) == 1


def test_failures_are_not_cached(checkpw_calls: list[bytes]) -> None:
    verifier = _verifier(alice=ALICE_HASH)

    for _ in range(3):
        assert not verifier.check(_basic("alice", "wrong"))
    assert verifier.check(_basic("alice", ALICE_PASSWORD))

    assert len(checkpw_calls) == 4


def test_cache_is_bounded_and_evicts_the_oldest(checkpw_calls: list[bytes]) -> None:
    users = {name: _hash(f"{name}-pw") for name in ("a", "b", "c")}
    verifier = BasicAuthVerifier({n: h.encode() for n, h in users.items()}, cache_size=2)

    for name in ("a", "b", "a", "c"):  # "a" is touched again, so "b" is the oldest
        assert verifier.check(_basic(name, f"{name}-pw"))
    assert len(checkpw_calls) == 3
    assert verifier.check(_basic("a", "a-pw"))
    assert verifier.check(_basic("c", "c-pw"))
    assert len(checkpw_calls) == 3
    assert verifier.check(_basic("b", "b-pw"))
    assert len(checkpw_calls) == 4


def test_cache_never_holds_the_plaintext_password() -> None:
    verifier = _verifier(alice=ALICE_HASH)
    assert verifier.check(_basic("alice", ALICE_PASSWORD))

    held = list(reachable_strings(verifier))

    assert held, "the walk found nothing: it no longer sees the verifier's state"
    assert not any(ALICE_PASSWORD.encode() in item for item in held)
    assert not any(_basic("alice", ALICE_PASSWORD)[6:].encode() in item for item in held)


def test_concurrent_checks_are_safe() -> None:
    users = {f"user{i}": _hash(f"pw{i}") for i in range(4)}
    verifier = BasicAuthVerifier(
        {n: h.encode() for n, h in users.items()}, cache_size=2, max_pending=8
    )
    results: list[bool] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for round_ in range(10):
            name = f"user{(i + round_) % 4}"
            password = f"pw{(i + round_) % 4}" if round_ % 3 else "wrong"
            outcome = verifier.check(_basic(name, password)) == (round_ % 3 != 0)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 80
    assert all(results)


class FakeTime:
    """Time that only bcrypt and sleep move: a check against a cost-c hash takes 2**c."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_every_uncached_check_takes_as_long_as_the_costliest_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeTime()
    real = bcrypt.checkpw

    def timed(password: bytes, hashed: bytes) -> bool:
        fake.now += 2 ** int(hashed[4:6])
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", timed)
    verifier = BasicAuthVerifier(
        {"alice": _hash("alice-pw", rounds=4).encode(), "bob": _hash("bob-pw", rounds=6).encode()},
        monotonic=fake.monotonic,
        sleep=fake.sleep,
    )
    verifier.check(_basic("alice", "warm-up"))  # the first cheap check measures the costliest once
    cases = {
        "cheap user, wrong password": _basic("alice", "wrong"),
        "costly user, wrong password": _basic("bob", "wrong"),
        "unknown user": _basic("mallory", "alice-pw"),
        "cheap user, right password": _basic("alice", "alice-pw"),
        "costly user, right password": _basic("bob", "bob-pw"),
    }
    durations = {}
    for case, header in cases.items():
        started = fake.now
        verifier.check(header)
        durations[case] = fake.now - started

    assert durations == dict.fromkeys(cases, 2**6)


def test_checks_past_the_bound_are_refused_at_once_while_known_credentials_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verifier = BasicAuthVerifier({"alice": ALICE_HASH.encode()}, max_pending=1)
    right = _basic("alice", ALICE_PASSWORD)
    assert verifier.check(right)
    entered, release = threading.Event(), threading.Event()
    real = bcrypt.checkpw

    def stuck(password: bytes, hashed: bytes) -> bool:
        entered.set()
        release.wait(10)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", stuck)
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(verifier.check(_basic("alice", "x"))))
    thread.start()
    try:
        assert entered.wait(10)
        for header in (_basic("alice", "wrong"), _basic("mallory", "guess")):
            with pytest.raises(VerifierBusy):
                verifier.check(header)
        assert verifier.known(right)
        assert not verifier.known(_basic("alice", "wrong"))
        assert verifier.check(right)  # cached: no bcrypt, no wait
    finally:
        release.set()
        thread.join(10)
    assert outcome == [False]
    assert not verifier.check(_basic("alice", "wrong"))  # admitted again


def _thread_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_password_checks_run_at_a_lower_priority_than_the_rest() -> None:
    """A flood keeps bcrypt busy; its threads yield the CPU to the loop serving scrapes."""
    ours = _thread_niceness()
    executor = check_executor(workers=1, niceness=3)
    try:
        theirs = executor.submit(_thread_niceness).result(timeout=10)
    finally:
        executor.shutdown(wait=True)
    assert theirs == min(ours + 3, 19)
    assert _thread_niceness() == ours  # the caller's thread keeps its priority


# --- re-reading the file -------------------------------------------------------------------


def _replace(path: Path, content: str | bytes) -> None:
    """A new file renamed over the old one, as Kubernetes and cert-manager do."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(content.encode() if isinstance(content, str) else content)
    os.replace(staged, path)


def test_watcher_looks_at_the_files_at_most_once_per_interval(tmp_path: Path) -> None:
    clock = Clock(0.0)
    path = _write(tmp_path, f"basic_auth_users:\n  alice: '{ALICE_HASH}'\n")
    watcher = WebConfigWatcher(path, check_interval=1.0, monotonic=clock)
    first = watcher.current()
    _replace(path, f"basic_auth_users:\n  bob: '{ALICE_HASH}'\n")

    assert watcher.current() is first
    clock.now = 1.0
    second = watcher.current()
    assert set(second.basic_auth_users) == {"bob"}
    clock.now = 5.0
    assert watcher.current() is second  # nothing changed since: not read again


def test_watcher_follows_the_tls_files(config_dir: Path) -> None:
    clock = Clock(0.0)
    path = _write(
        config_dir, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    )
    watcher = WebConfigWatcher(path, check_interval=1.0, monotonic=clock)
    first = watcher.current()

    _replace(config_dir / "server.crt", (config_dir / "server.crt").read_bytes())
    clock.now = 1.0

    assert watcher.current() is not first


def test_watcher_keeps_the_last_good_config_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(0.0)
    path = _write(tmp_path, f"basic_auth_users:\n  alice: '{ALICE_HASH}'\n")
    watcher = WebConfigWatcher(path, check_interval=1.0, monotonic=clock)
    good = watcher.current()

    with caplog.at_level(logging.INFO, logger="exporter.web.webconfig"):
        _replace(path, "basic_auth_users:\n  alice: hunter2\n")
        for second in range(1, 5):
            clock.now = second
            assert watcher.current() is good
        assert not watcher.reload()
        assert watcher.current() is good
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors
        assert "basic_auth_users.alice: not a bcrypt hash" in errors[0]
        assert "hunter2" not in errors[0]

        _replace(path, f"basic_auth_users:\n  bob: '{ALICE_HASH}'\n")
        clock.now = 10.0
        assert set(watcher.current().basic_auth_users) == {"bob"}


def test_watcher_reload_reads_now(tmp_path: Path) -> None:
    path = _write(tmp_path, f"basic_auth_users:\n  alice: '{ALICE_HASH}'\n")
    watcher = WebConfigWatcher(path, check_interval=3600, monotonic=Clock(0.0))
    _replace(path, f"basic_auth_users:\n  bob: '{ALICE_HASH}'\n")

    assert watcher.reload()
    assert set(watcher.current().basic_auth_users) == {"bob"}


def test_watcher_refuses_a_bad_file_at_start(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match=r"basic_auth_users\.alice"):
        WebConfigWatcher(_write(tmp_path, "basic_auth_users:\n  alice: hunter2\n"))
