"""Deployment artefacts: Kubernetes manifests (schema-validated), docker-compose, the Dockerfile,
the nginx template, and the README's generated settings table and metrics list.

No Docker engine or cluster is needed: manifests are validated with kubernetes-validate's bundled
OpenAPI schemas (strict: unknown fields fail), and everything is checked for coherence with the
settings class and with each other.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from gateway.observability import GatewayMetrics
from gateway.relay.registry import SessionRegistry
from gateway.settings import Settings
from gateway.simulator.server import DataflowSimulator
from scripts.settings_table import README, readme_block, settings_table
from tests.support.harness import RunningGateway, running_gateway, ws_connect
from tests.support.probes import read_timed, start_json
from tests.support.settings import settings_for

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
WS_TIMEOUT_FLOOR_S = 3600  # proxies must outlast quiet sessions, far above the 20 s WebSocket ping


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomize_resources() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [doc for name in kustomization["resources"] for doc in load_all(K8S / name)]
    return {doc["kind"]: doc for doc in docs}


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Build Settings the way a container does (JSON lists included); every key must be a setting."""
    unknown = sorted(k for k in env if k.removeprefix("GATEWAY_").lower() not in Settings.model_fields)
    assert not unknown, f"not settings: {unknown}"
    for key in [k for k in os.environ if k.startswith("GATEWAY_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default}, resolved to the default (the stack must work without a .env)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


# --- Kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_match_the_kubernetes_schemas(path: Path) -> None:
    for doc in load_all(path):
        if doc["kind"] != "Kustomization":
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomize_build_is_valid() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the manifests are still validated file by file)")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert {d["kind"] for d in docs} == {"ConfigMap", "Service", "Deployment", "Ingress", "HorizontalPodAutoscaler",
                                         "PodDisruptionBudget"}  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_deployment_drains_before_it_stops_and_runs_locked_down(monkeypatch: pytest.MonkeyPatch) -> None:
    res = kustomize_resources()
    deployment, config = res["Deployment"], res["ConfigMap"]
    secret = load_all(K8S / "secret.example.yaml")[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2 == res["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    env = {**config["data"], **secret["stringData"], **{e["name"]: e["value"] for e in container["env"]}}
    settings = settings_from_env(monkeypatch, env)
    assert [ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]] == [
        config["metadata"]["name"], secret["metadata"]["name"]]  # fmt: skip
    assert not settings.simulator_mode and settings.auth_required and settings.admin_token is not None

    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["dataflow-gateway", "drain"]
    drain_wait = settings.drain_budget_s + settings.client_send_timeout_s + 2  # the drain command's default
    assert pod["terminationGracePeriodSeconds"] >= drain_wait + 5  # + uvicorn's own graceful shutdown
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert port == settings.port == 8080
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: (p["path"], p["port"]) for kind, p in probes.items()} == {
        "startupProbe": ("/healthz", "http"), "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http")}  # fmt: skip
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]

    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_user()
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False


def test_service_ingress_hpa_and_pdb_point_at_the_deployment() -> None:
    res = kustomize_resources()
    deployment, service, ingress = res["Deployment"], res["Service"], res["Ingress"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"] == selector
    assert res["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    hpa = res["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}  # fmt: skip
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]

    paths = [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    for path in paths:
        assert path["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    routed = {p["path"] for p in paths}
    assert {"/v1", "/project-runner"} <= routed
    assert not any(p == "/" or p.startswith(("/internal", "/metrics", "/readyz")) for p in routed)
    public = [
        "/v1/stream",
        "/v1/recognize",
        "/project-runner/demo",
        "/project-runner",
        "/docs",
        "/healthz",
        "/t/k3y/v1/audiocodes",
        "/t/k3y/v1/audiohook",
        "/t/k3y/project-runner/demo",
        "/t/k3y/project-runner",
    ]
    private = ["/metrics", "/internal/drain", "/readyz", "/", "/t/k3y/metrics", "/t/k3y/internal/drain",
               "/t/k3y/readyz", "/T/k3y/METRICS", "/t/k3y/healthz", "/t/v1/metrics"]  # fmt: skip
    assert [url for url in public if not ingress_routes(ingress, url)] == []
    assert [url for url in private if ingress_routes(ingress, url)] == []
    notes = ingress["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) >= WS_TIMEOUT_FLOOR_S
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    # Pods that answer a draining handshake with 503 need a proxy that retries it on another pod.
    if res["ConfigMap"]["data"].get("GATEWAY_WS_DRAIN_REFUSES_HANDSHAKE") == "true":
        assert "http_503" in notes["nginx.ingress.kubernetes.io/proxy-next-upstream"].split()
        assert int(notes["nginx.ingress.kubernetes.io/proxy-next-upstream-tries"]) >= 2


def ingress_routes(ingress: dict[str, Any], url: str) -> bool:
    """Whether ingress-nginx sends ``url`` to a pod. Prefix matches whole segments; with ``use-regex``
    every path of the host but the Exact ones is a case-insensitive regex anchored at the start."""
    regex = ingress["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/use-regex") == "true"
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            kind, value = path["pathType"], path["path"]
            if kind == "Exact":
                hit = url == value
            elif kind == "Prefix" and not regex:
                hit = url == value or url.startswith(value.rstrip("/") + "/")
            else:
                assert regex, f"{value}: an ImplementationSpecific path needs use-regex"
                hit = re.match(value, url, re.I) is not None
            if hit:
                return True
    return False


def test_kustomize_sets_the_image_of_the_deployment() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (container,) = kustomize_resources()["Deployment"]["spec"]["template"]["spec"]["containers"]
    (image,) = kustomization["images"]
    assert image["name"] == container["image"], "kustomize's images: must name the Deployment's image"
    assert image["newName"] and str(image["newTag"])


@pytest.mark.ws
async def test_readiness_is_capacity_not_data_flow_and_an_outage_is_a_retryable_error(
    simulator: DataflowSimulator,
) -> None:
    """Data Flow down: the pod stays ready (an ingress would otherwise answer a bare 503), /healthz
    tells the outage, a new session gets the retryable upstream_unavailable once its start's attempts
    are spent (within GATEWAY_UPSTREAM_RECOVERY_WINDOW_S, 2 s here); Data Flow back: ok."""
    settings = settings_for(simulator, upstream_reconnect_backoff_max_s=0.5, upstream_recovery_window_s=2.0)
    async with running_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=5) as http:
        assert (await http.get("/healthz")).json()["upstream"]["status"] == "ok"
        port = simulator.port
        await simulator.stop(None)
        began = time.monotonic()
        health = await until_json(http, "/healthz", lambda body: body["upstream"]["status"] == "unavailable")
        noticed_s = time.monotonic() - began
        assert health == {"status": "ok", "upstream": {"status": "unavailable", "channel": False, "token": True}}
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.json()
        assert ready.json()["checks"] == {"not_draining": True, "below_capacity": True}
        async with ws_connect(gw.ws_url()) as ws:
            await ws.send(start_json())
            refused = await read_timed(ws, timeout=10)
        (error,) = refused.of_type("error")
        assert (error["code"], error["retryable"], refused.close_code) == ("upstream_unavailable", True, 1011)

        await simulator.start("127.0.0.1", port)
        await until_json(http, "/healthz", lambda body: body["upstream"]["status"] == "ok", timeout=5)
        print(f"upstream outage in /healthz after {noticed_s:.2f} s; /readyz stayed 200")


async def until_json(
    http: httpx.AsyncClient, path: str, done: Callable[[dict[str, Any]], bool], timeout: float = 3
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            response = await http.get(path)
            body: dict[str, Any] = response.json()
            if done(body):
                return body
            await asyncio.sleep(0.05)


# --- docker-compose, Dockerfile, nginx ---------------------------------------------------------------


def test_compose_runs_two_replicas_behind_nginx_on_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"simulator", "gateway-1", "gateway-2", "nginx"}
    simulator = [interpolate(arg) for arg in services["simulator"]["command"]]
    assert simulator[:1] == ["simulator"] and simulator[simulator.index("--host") + 1] == "0.0.0.0"
    sim_port, sim_token = simulator[simulator.index("--port") + 1], simulator[simulator.index("--token") + 1]
    nginx = services["nginx"]
    for name in ("gateway-1", "gateway-2"):
        gateway = services[name]
        assert (ROOT / gateway["build"]["context"] / gateway["build"]["dockerfile"]).is_file()
        env = {key: interpolate(str(value)) for key, value in gateway["environment"].items()}
        settings = settings_from_env(monkeypatch, env)
        assert settings.host == "0.0.0.0"
        assert settings.upstream_target == f"simulator:{sim_port}" and settings.upstream_is_plaintext()
        assert settings.upstream_token is not None and settings.upstream_token.get_secret_value() == sim_token
        grace = float(gateway["stop_grace_period"].removesuffix("s"))
        assert grace >= settings.drain_budget_s + settings.client_send_timeout_s + 5  # budget, goodbyes, uvicorn
        assert gateway["depends_on"]["simulator"]["condition"] == "service_healthy"
        assert nginx["depends_on"][name]["condition"] == "service_healthy"
        assert f"{name}:{settings.port}" in nginx["environment"].values()
        assert settings.ws_drain_refuses_handshake  # nginx retries those 503s (test_load_balancer runs it)
    mounted = {v.split(":")[1]: ROOT / v.split(":")[0] for v in nginx["volumes"]}
    assert mounted["/etc/nginx/templates"] / NGINX_TEMPLATE.name == NGINX_TEMPLATE
    assert template_placeholders() == set(nginx["environment"])
    published = nginx["ports"][0].rsplit(":", 1)[1]
    assert published == nginx["environment"]["NGINX_PORT"]
    code = services["simulator"]["healthcheck"]["test"][-1]
    compile(code, "healthcheck", "exec")


def template_placeholders() -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", NGINX_TEMPLATE.read_text()))


def test_nginx_template_proxies_websockets_without_buffering() -> None:
    text = NGINX_TEMPLATE.read_text()
    for directive in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $websocket_upgrade;",
                      "proxy_set_header Connection $connection_upgrade;", "proxy_buffering off;",
                      "proxy_request_buffering off;", "client_max_body_size 0;", "least_conn;",
                      "proxy_next_upstream error timeout http_503;"):  # fmt: skip
        assert directive in text, directive
    for timeout in re.findall(r"proxy_(?:read|send)_timeout (\d+)s;", text):
        assert int(timeout) >= WS_TIMEOUT_FLOOR_S
    assert re.search(r"location /internal/ \{\s*return 404;", text)


def dockerfile_stages() -> list[list[str]]:
    lines = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    stages: list[list[str]] = []
    for line in (ln.strip() for ln in lines):
        if line.startswith("FROM "):
            stages.append([])
        if line and not line.startswith("#") and stages:
            stages[-1].append(line)
    return stages


def dockerfile_user() -> int:
    user = next(line.split()[1] for line in dockerfile_stages()[-1] if line.startswith("USER "))
    return int(user.split(":")[0])


def test_dockerfile_final_stage_is_slim_non_root_and_has_no_build_tools() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert base is not None and base.group(1).startswith("python:3.11-slim")
    build, final = dockerfile_stages()
    assert final[0] == "FROM ${PYTHON_IMAGE} AS runtime"
    assert dockerfile_user() >= 10000
    assert not any(line.startswith("RUN ") for line in final), "the final stage installs nothing"
    assert not re.search(r"gcc|g\+\+|build-essential|apt-get|-dev\b", "\n".join(final))
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert 'ENTRYPOINT ["dataflow-gateway"]' in final and 'CMD ["serve"]' in final
    assert "EXPOSE 8080" in final and "GATEWAY_HOST=0.0.0.0" in " ".join(final)
    # What the build copies is in the build context; everything else (.env, .git, tests) is not.
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :][:3] == ["!pyproject.toml", "!README.md", "!gateway/"]
    for line in build:
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, source


@pytest.fixture
def gateway_port(gw: RunningGateway) -> int:
    return gw.port


async def test_image_healthcheck_command_probes_healthz(gateway_port: int) -> None:
    healthcheck = next(line for line in dockerfile_stages()[-1] if line.startswith("HEALTHCHECK "))
    command = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert command[0] == "python"
    env = {"GATEWAY_PORT": str(gateway_port), "PATH": "/usr/bin:/bin"}
    ok = await run([sys.executable, *command[1:]], env)
    dead = await run([sys.executable, *command[1:]], {**env, "GATEWAY_PORT": "1"})
    assert (ok, dead != 0) == (0, True)


async def run(command: list[str], env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(*command, env=env, stderr=subprocess.DEVNULL)
    return await process.wait()


# --- README -----------------------------------------------------------------------------------------


def test_readme_settings_table_is_generated_from_the_settings_class() -> None:
    assert readme_block(README.read_text()) == settings_table(), (
        "README.md's settings table is stale: run python scripts/settings_table.py --update-readme"
    )


def test_readme_lists_every_metric() -> None:
    metrics = GatewayMetrics()
    SessionRegistry(1, metrics)
    readme = README.read_text()
    missing = [f.name for f in metrics.registry.collect() if f"`{f.name}" not in readme]
    assert not missing, f"metrics missing from README.md's Operate section: {missing}"


def test_readme_set_up_is_two_commands_each_in_its_own_virtualenv_and_ci_runs_the_test_one() -> None:
    text = README.read_text()
    quick_start = text[text.index("## Quick start") : text.index("The gateway listens on")]
    run, test = re.findall(r"```sh\n(.*?)\n```", quick_start, re.S)
    venvs = []
    for command in (run, test):
        assert "\n" not in command, f"one command per block: {command!r}"
        venv = re.match(r"python3 -m venv (\S+) && ", command)
        assert venv is not None, f"must start by creating a virtualenv: {command!r}"
        venvs.append(venv.group(1))
        assert "python3 -m pip" not in command and " pip install" not in command, "pip must be the venv's"
    assert venvs[0] != venvs[1], "the test install must not touch the running gateway's environment"
    assert run.endswith(f"{venvs[0]}/bin/dataflow-gateway") and "-e " not in run
    assert test.endswith("bash scripts/check") and '-e ".[test]"' in test
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.startswith("#")]
    assert test in ci, ".ci/run must run README's test command verbatim"
    assert "export REQUIRE_SYSTEM_BINARIES=1" in ci
    check = (ROOT / "scripts" / "check").read_text()
    assert check.index("bash scripts/system_binaries.sh") < check.index("python -m pytest")
    ignored = (ROOT / ".gitignore").read_text().split()
    assert all(any(fnmatch.fnmatch(f"{venv}/", pattern) for pattern in ignored) for venv in venvs)
