"""The wheel `pip install .` builds holds the whole program: every module of the
package, and a `--demo --once` run that imports nothing from the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.harness import run_cli

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = (".git", ".ci", ".venv", "venv", "build", "*.egg-info", "__pycache__", ".*_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy: an in-tree build reuses `build/`, which can hold modules the
    # package configuration no longer ships.
    source = tmp_path_factory.mktemp("source") / "notte-exporter"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("notte_exporter-*.whl")
    return built


def test_the_wheel_holds_every_module_of_the_package(wheel: Path) -> None:
    in_wheel = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    in_tree = {str(path.relative_to(ROOT)) for path in (ROOT / "exporter").rglob("*.py")}
    assert in_tree - in_wheel == set()
    assert "exporter/simulator/server.py" in in_wheel


def test_demo_once_runs_from_the_wheel_alone(wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    # PYTHONPATH comes before the editable install; the cwd is not the source tree.
    probe = run_cli("--version", env={"PYTHONPATH": str(unpacked)}, cwd=str(tmp_path))
    assert probe.returncode == 0, probe.stderr
    result = run_cli("--demo", "--once", env={"PYTHONPATH": str(unpacked)}, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    for status in ("active", "closed", "error", "timed_out"):
        assert f'status="{status}"}} 1.0' in result.stdout
    # --demo shows the account too: functions, a schedule, runs, the runtime, usage.
    for shown in (
        'name="checkout-monitor"',
        'schedule="rate(1 minute)"',
        "notte_function_next_run_timestamp_seconds{",
        "notte_function_run_session_info{",
        'notte_functions_runtime_status{status="ok"} 1.0',
        'notte_usage_balance{kind="total"}',
    ):
        assert shown in result.stdout, shown
    located = subprocess.run(
        [sys.executable, "-c", "import exporter.simulator as s; print(s.__file__)"],
        env={"PYTHONPATH": str(unpacked)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert located.stdout.startswith(str(unpacked))
