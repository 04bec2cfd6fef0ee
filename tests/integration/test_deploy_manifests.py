"""deploy/: every definition validated offline, and held to what the product actually is.

- Kubernetes manifests against the official Kubernetes JSON schemas bundled by the PyPI package
  ``kubernetes-validate`` (strict: an unknown field is an error; a kind without a schema fails);
- ``compose.yaml`` against the Compose Specification schema that ``check-jsonschema`` vendors;
- the systemd units with ``systemd-analyze verify`` and its offline security score;
- the Dockerfile by a lint of what it runs;
- the product's invariants: every process role deployed, with a command the CLI accepts; the web
  probe path is a receiver route; every setting named is one ``Settings`` (or the simulator's
  config) reads; keys reach processes as files, the receiver never gets the private key, and no
  key material is committed.
"""

from __future__ import annotations

import http.server
import importlib.resources
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import kubernetes_validate.utils  # type: ignore[import-untyped]
import pytest
import yaml
from starlette.routing import Route

from worker.cli import cli, main
from worker.config import Settings
from worker.devtools.demo.redis_server import RedisServer, free_port
from worker.devtools.simulator.config import SimulatorConfig
from worker.gateway.signing import generate_portal_key_pair
from worker.metrics import SEARCH_SPAN
from worker.receiver.app import create_receiver
from worker.receiver.ingest import Ingestor

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
CONSOLE_SCRIPT = "checus-worker"
# The oldest Kubernetes minor these manifests promise to work on, and the newest the schemas know.
OLDEST_KUBERNETES = "1.29"
ROLES = {"web": ["web"], "worker": ["work"], "scheduler": ["scheduler"], "api": ["api"]}
PRIVATE_KEY_SETTING, PUBLIC_KEYS_SETTING = "CHECUS_MERCHANT_PRIVATE_KEY", "CHECUS_PLATFORM_PUBLIC_KEYS"
# Variables a container or unit may set that are not product settings.
RUNTIME_VARIABLES = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
BUILD_VARIABLES = {"PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the value a container must listen on; nothing binds here
KEY_MATERIAL = re.compile(r"-----BEGIN [A-Z ]*KEY-----|[A-Za-z0-9+/]{120,}={0,2}")

Doc = dict[str, Any]


# -- reading -------------------------------------------------------------------------------


def _yaml_documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _k8s_documents() -> list[tuple[str, Doc]]:
    return [(path.name, doc) for path in _k8s_files() for doc in _yaml_documents(path)]


def _of_kind(kind: str) -> list[Doc]:
    return [doc for _, doc in _k8s_documents() if doc["kind"] == kind]


def _named(kind: str, name: str) -> Doc:
    found = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _pod_specs() -> list[tuple[str, Doc]]:
    """(workload name, pod spec) of every Deployment and Job."""
    return [(doc["metadata"]["name"], doc["spec"]["template"]["spec"])
            for doc in _of_kind("Deployment") + _of_kind("Job")]


def _containers(pod: Doc) -> list[Doc]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def _compose() -> Doc:
    return _yaml_documents(DEPLOY / "compose.yaml")[0]


def _checus_services() -> dict[str, Doc]:
    """The compose services that run the product's image (built from deploy/Dockerfile)."""
    return {name: svc for name, svc in _compose()["services"].items() if "build" in svc}


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as {section: [(key, value), ...]}; keys may repeat, as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def _values(unit: dict[str, list[tuple[str, str]]], key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def _units() -> dict[str, dict[str, list[tuple[str, str]]]]:
    return {path.name: _unit(path) for path in sorted(SYSTEMD.glob("*.service"))}


def _unit_environment(unit: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    pairs = [item.split("=", 1) for value in _values(unit, "Environment") for item in shlex.split(value)]
    return {name: value for name, value in pairs}


def _env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, arguments = stripped.partition(" ")
            instructions.append((instruction.upper(), arguments.strip()))
    return instructions


def _instructions(name: str) -> list[str]:
    return [arguments for instruction, arguments in _dockerfile() if instruction == name]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile()
    last_from = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    return instructions[last_from:]


# -- what the product reads ----------------------------------------------------------------------


class _Recorder(Mapping[str, str]):
    """An environment that records every variable asked of it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._given = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._given[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)


def _asked(parse: Callable[[Mapping[str, str]], object], *environments: Mapping[str, str]) -> frozenset[str]:
    asked: set[str] = set()
    for environment in environments:
        recorder = _Recorder(environment)
        parse(recorder)
        asked |= recorder.asked
    return frozenset(asked)


@pytest.fixture(scope="module")
def product_settings() -> frozenset[str]:
    """Every variable ``Settings.from_env`` reads."""
    return _asked(Settings.from_env, {})


@pytest.fixture(scope="module")
def simulator_settings(tmp_path_factory: pytest.TempPathFactory) -> frozenset[str]:
    """Every variable ``SimulatorConfig.from_env`` reads, keys given inline and as files."""
    pair = generate_portal_key_pair()
    keys = tmp_path_factory.mktemp("sim-keys")
    public, private = keys / "public.txt", keys / "private.txt"
    public.write_text(pair.public_key)
    private.write_text(pair.private_key)
    private.chmod(0o600)
    base = {"CHECUS_SIM_APP_ID": "A", "CHECUS_SIM_MERCHANT_NO": "M"}
    inline = {**base, "CHECUS_SIM_MERCHANT_PUBLIC_KEYS": pair.public_key,
              "CHECUS_SIM_PLATFORM_PRIVATE_KEY": pair.private_key}
    files = {**base, "CHECUS_SIM_MERCHANT_PUBLIC_KEYS_FILE": str(public),
             "CHECUS_SIM_PLATFORM_PRIVATE_KEY_FILE": str(private)}
    return _asked(SimulatorConfig.from_env, inline, files)


def _receiver_get_routes() -> set[str]:
    """The receiver's GET paths (its endpoints are built lazily: nothing here is called)."""
    unused = SimpleNamespace(writer=object())  # an ingestor stand-in: the probe reads its writer lazily too
    app = create_receiver(cast(Ingestor, unused), engine=cast(Any, object()), redis=cast(Any, object()))
    return {route.path for route in app.routes if isinstance(route, Route) and "GET" in (route.methods or ())}


def _cli_accepts(args: list[str]) -> bool:
    """Whether ``checus-worker ARGS`` parses (run with --help: nothing starts)."""
    return main([*args, "--help"]) == 0


# -- Kubernetes ------------------------------------------------------------------------------------


def _schema_cases() -> list[Any]:
    latest = kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version())
    return [pytest.param(doc, version, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}@{version}")
            for name, doc in _k8s_documents() for version in (OLDEST_KUBERNETES, latest)]


@pytest.mark.parametrize(("manifest", "version"), _schema_cases())
def test_kubernetes_manifest_validates_against_the_official_schema(manifest: Doc, version: str) -> None:
    """Each object is valid for its apiVersion and kind, strictly (no unknown field), on old and new clusters."""
    bundled = {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    assert version in bundled, \
        f"kubernetes-validate {kubernetes_validate.__version__} bundles no schema for Kubernetes {version}"
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{'.'.join(map(str, exc.path))}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(exc.message)


def test_the_schema_validation_catches_a_misspelt_field() -> None:
    """The validator in use rejects an unknown field and a wrong type (so the test above can fail)."""
    deployment = json.loads(json.dumps(_named("Deployment", "checus-worker")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)
    container["readinessProbe"] = container.pop("readinesProbe")
    container["resources"]["requests"]["cpu"] = ["250m"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    """`kubectl apply -k` applies everything except secret.yaml, which would overwrite real keys."""
    kustomization = _yaml_documents(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert "namespace" not in kustomization
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in _k8s_files()} - {"secret.yaml"}
    assert all((K8S / name).is_file() for name in listed)


def test_manifests_are_namespace_agnostic() -> None:
    """No object pins a namespace: the one of the context or of an overlay applies."""
    pinned = [f"{name}:{doc['kind']}" for name, doc in _k8s_documents() if "namespace" in doc["metadata"]]
    assert not pinned


def test_every_process_role_has_a_deployment_and_the_migration_a_job() -> None:
    """web, work and scheduler run as Deployments and `db upgrade` as a Job, with arguments the CLI accepts."""
    for component, args in ROLES.items():
        deployment = _named("Deployment", f"checus-{component}")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == args
        assert "command" not in container, "the image's ENTRYPOINT (checus-worker) must run"
        assert _cli_accepts(container["args"])
    job = _named("Job", "checus-db-upgrade")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    assert job["spec"].get("parallelism", 1) == 1, "two migrations must never run at once"
    assert _cli_accepts(["db", "upgrade"])


def test_workloads_are_hardened_and_sized() -> None:
    """Non-root, read-only root filesystem, no privilege escalation, no capability, requests and limits."""
    for name, pod in _pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in _containers(pod):
            security = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where


def test_web_probes_use_a_real_receiver_route_on_the_served_port() -> None:
    """The readiness probe GETs /healthz, a route of worker.receiver.app, on the port the receiver listens on."""
    routes = _receiver_get_routes()
    assert "/healthz" in routes
    pod = _named("Deployment", "checus-web")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    settings = _named("ConfigMap", "checus-settings")["data"]
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] in routes
    assert ports[readiness["port"]] == int(settings["CHECUS_RECEIVER_PORT"])
    assert settings["CHECUS_RECEIVER_HOST"] == ALL_INTERFACES  # the default, 127.0.0.1, is unreachable in a pod
    assert ports[container["livenessProbe"]["tcpSocket"]["port"]] == int(settings["CHECUS_RECEIVER_PORT"])
    service = _named("Service", "checus-web")
    assert service["spec"]["selector"].items() <= _named("Deployment", "checus-web")["spec"]["template"][
        "metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)


def test_the_api_is_cluster_internal_behind_a_network_policy_and_probes_a_real_route() -> None:
    """ClusterIP only; ingress only from pods labelled checus-api-client on the API's port; /healthz is served."""
    from worker.api.app import create_api

    service = _named("Service", "checus-api")
    pod_labels = _named("Deployment", "checus-api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["selector"].items() <= pod_labels.items()
    policy = _named("NetworkPolicy", "checus-api")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items() and policy["policyTypes"] == ["Ingress"]
    assert [(rule["from"], rule["ports"]) for rule in policy["ingress"]] == [
        ([{"podSelector": {"matchLabels": {"checus-api-client": "true"}}}], [{"port": "http", "protocol": "TCP"}]),
        ([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"checus-metrics-scraper": "true"}}}],
         [{"port": "metrics", "protocol": "TCP"}]),
    ]
    container = _named("Deployment", "checus-api")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CHECUS_API_HOST"] == ALL_INTERFACES and container["ports"][0]["containerPort"] == int(
        env["CHECUS_API_PORT"])
    unused = SimpleNamespace(engine=object(), clock=object(), event_sinks=())  # routes are built, nothing is called
    routes = {getattr(r, "path", None) for r in create_api(cast(Any, unused)).routes}
    assert container["readinessProbe"]["httpGet"]["path"] in routes
    assert container["readinessProbe"]["httpGet"]["port"] == container["ports"][0]["name"]
    compose_api = _compose()["services"]["api"]
    assert compose_api["ports"] == ["127.0.0.1:8081:8081"], "published on loopback only: the API is internal"


def test_every_role_declares_its_metrics_port_and_is_annotated_for_scraping() -> None:
    """The port the configmap gives CHECUS_METRICS_PORT is declared on every role and named in its annotations."""
    port = int(_named("ConfigMap", "checus-settings")["data"]["CHECUS_METRICS_PORT"])
    for name in ("checus-web", "checus-worker", "checus-scheduler", "checus-api"):
        template = _named("Deployment", name)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port, name
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == port, name


def test_worker_and_scheduler_have_exec_probes_and_scheduler_runs_two() -> None:
    """Workers and schedulers serve no HTTP: exec probes; two schedulers so one can take over."""
    for component in ("worker", "scheduler"):
        container = _named("Deployment", f"checus-{component}")["spec"]["template"]["spec"]["containers"][0]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["exec"]["command"][:2] == ["python", "-c"], f"{component} {probe}"
    assert _named("Deployment", "checus-scheduler")["spec"]["replicas"] == 2


def test_exec_probe_commands_answer_for_redis(redis_server: RedisServer) -> None:
    """Each exec probe exits 0 when Redis answers at REDIS_URL and non-zero when it does not."""
    commands = {json.dumps(container[probe]["exec"]["command"])
                for doc in _of_kind("Deployment")
                for container in doc["spec"]["template"]["spec"]["containers"]
                for probe in ("readinessProbe", "livenessProbe") if "exec" in container.get(probe, {})}
    commands |= {json.dumps(svc["healthcheck"]["test"][1:]) for svc in _checus_services().values()
                 if "REDIS_URL" in " ".join(svc.get("healthcheck", {}).get("test", []))}
    assert len(commands) >= 2, "expected the worker/scheduler probes of Kubernetes and compose"
    nothing = f"redis://127.0.0.1:{free_port()}/0"
    for command in map(json.loads, commands):
        argv = [sys.executable, *command[1:]] if command[0] == "python" else command
        up = subprocess.run(argv, env={"REDIS_URL": redis_server.url}, capture_output=True, timeout=30, check=False)
        down = subprocess.run(argv, env={"REDIS_URL": nothing}, capture_output=True, timeout=30, check=False)
        assert up.returncode == 0, up.stderr
        assert down.returncode != 0


def test_worker_autoscaler_and_disruption_budgets() -> None:
    """The HPA (autoscaling/v2, CPU) owns the worker count; PDBs cover web and worker with the pods' labels."""
    hpa = _named("HorizontalPodAutoscaler", "checus-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checus-worker"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    worker = _named("Deployment", "checus-worker")
    assert "replicas" not in worker["spec"], "a fixed count would fight the autoscaler on every apply"
    assert "cpu" in worker["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    for component in ("web", "worker"):
        budget = _named("PodDisruptionBudget", f"checus-{component}")
        labels = _named("Deployment", f"checus-{component}")["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_keys_are_files_with_owner_only_modes_and_the_receiver_never_gets_the_private_key() -> None:
    """Key settings are *_FILE paths on mounted Secrets; the private key ends up mode 0600; web has public keys only."""
    secret_keys = {doc["metadata"]["name"]: set(doc.get("stringData", {})) | set(doc.get("data", {}))
                   for doc in _of_kind("Secret")}
    for name, pod in _pod_specs():
        for container in _containers(pod):
            env = {e["name"]: e for e in container.get("env", [])}
            assert PRIVATE_KEY_SETTING not in env and PUBLIC_KEYS_SETTING not in env, f"{name}: key in env"
            for entry in env.values():
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secret_keys[ref["name"]], f"{name}: {ref}"
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == "checus-keys"
                assert volume["secret"]["defaultMode"] & 0o337 == 0, f"{name}: {oct(volume['secret']['defaultMode'])}"
    web = _named("Deployment", "checus-web")["spec"]["template"]["spec"]
    web_env = {e["name"] for e in web["containers"][0]["env"]}
    assert f"{PRIVATE_KEY_SETTING}_FILE" not in web_env
    assert [item["key"] for v in web["volumes"] if "secret" in v for item in v["secret"]["items"]] == \
        ["platform_public_keys"]
    worker = _named("Deployment", "checus-worker")["spec"]["template"]["spec"]
    install = " ".join(worker["initContainers"][0]["command"])
    private_file = next(e["value"] for e in worker["containers"][0]["env"]
                        if e["name"] == f"{PRIVATE_KEY_SETTING}_FILE")
    assert f"install -m 0600 /etc/checus/secret/merchant_private_key {private_file}" in install
    for role in ("checus-scheduler", "checus-db-upgrade"):
        pod = dict(_pod_specs())[role]
        assert not [v for v in pod.get("volumes", []) if "secret" in v], f"{role} needs no key"


def test_secrets_hold_placeholders_only() -> None:
    """Every value of every committed Secret is a marked placeholder."""
    secrets = _of_kind("Secret")
    assert {s["metadata"]["name"] for s in secrets} == {"checus-keys", "checus-credentials"}
    for secret in secrets:
        assert "data" not in secret, "base64 data could hide a real value"
        for key, value in secret["stringData"].items():
            assert value.startswith("PLACEHOLDER"), f"{secret['metadata']['name']}.{key}"
    assert set(_named("Secret", "checus-keys")["stringData"]) == {"merchant_private_key", "platform_public_keys"}


def test_no_key_material_is_committed_under_deploy() -> None:
    """No PEM block and no long Base64 run (a portal-format key) in any file of deploy/."""
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and "secrets" not in p.relative_to(DEPLOY).parts]
    assert len(files) >= 10
    for path in files:
        assert not KEY_MATERIAL.search(path.read_text(errors="replace")), f"{path.relative_to(ROOT)}"
    gitignore = (DEPLOY / ".gitignore").read_text().split()
    assert {"secrets/", ".env"} <= set(gitignore)


def test_kubernetes_settings_are_real_settings(product_settings: frozenset[str]) -> None:
    """Every ConfigMap key and container variable is a setting the product reads."""
    names = set(_named("ConfigMap", "checus-settings")["data"])
    for _, pod in _pod_specs():
        names |= {e["name"] for c in _containers(pod) for e in c.get("env", [])}
        for container in _containers(pod):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] == "checus-settings"
    assert names - product_settings == set()
    assert {"REDIS_URL", "DATABASE_URL", "CHECUS_NOTIFY_BASE_URL", "CHECUS_APP_ID"} <= names


# -- compose -----------------------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification() -> None:
    """compose.yaml is valid for the Compose Specification's JSON schema (vendored by check-jsonschema)."""
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(vendored.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    compose = _compose()
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    misspelt = json.loads(json.dumps(compose))
    misspelt["services"]["web"]["healthchek"] = misspelt["services"]["web"].pop("healthcheck")
    assert list(validator.iter_errors(misspelt)), "the schema in use must reject an unknown service field"


def test_compose_runs_every_role_with_redis_and_postgres() -> None:
    """redis (AOF, noeviction, a volume), postgres (volume, healthcheck), a one-shot migration, then the roles."""
    services = _compose()["services"]
    assert set(services) == {"redis", "postgres", "migrate", "web", "worker", "scheduler", "api", "sim"}
    redis_command = services["redis"]["command"]
    assert redis_command[0] == "redis-server"
    flags = dict(zip(redis_command[1::2], redis_command[2::2], strict=True))
    assert flags["--appendonly"] == "yes"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name, args in ROLES.items():
        service = services[name]
        assert service["command"] == args
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["scheduler"]["deploy"]["replicas"] == 2
    assert services["sim"]["profiles"] == ["dev"]
    for name, service in _checus_services().items():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        assert _cli_accepts(service["command"]), name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert not str(service["user"]).startswith(("0:", "root")), name


def test_compose_keys_are_file_secrets_read_through_file_settings() -> None:
    """Secrets are files, mounted at /run/secrets/NAME; every *_FILE setting points at one the service mounts."""
    compose = _compose()
    assert all(set(s) == {"file"} for s in compose["secrets"].values())
    for name, service in _checus_services().items():
        env = service.get("environment", {})
        assert PRIVATE_KEY_SETTING not in env and PUBLIC_KEYS_SETTING not in env, name
        mounted = set(service.get("secrets", []))
        for variable, value in env.items():
            if variable.endswith("_FILE"):
                assert value.startswith("/run/secrets/"), f"{name}: {variable}"
                assert value.removeprefix("/run/secrets/") in mounted, f"{name}: {variable}"
        assert mounted <= set(compose["secrets"])
    services = compose["services"]
    assert "merchant_private_key" not in services["web"].get("secrets", [])
    assert {"merchant_private_key", "platform_public_keys"} <= set(services["worker"]["secrets"])
    assert "secrets" not in services["scheduler"], "the scheduler calls nothing at Checus"


def test_compose_healthchecks() -> None:
    """web checks /healthz on its port, and listens on all interfaces; the other roles have their own check."""
    services = _compose()["services"]
    web = services["web"]
    assert web["environment"]["CHECUS_RECEIVER_HOST"] == ALL_INTERFACES
    port = web["environment"]["CHECUS_RECEIVER_PORT"]
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)'", " ".join(web["healthcheck"]["test"]))
    assert match and match.group(1) == port and match.group(2) in _receiver_get_routes()
    assert f"{port}:{port}" in web["ports"]
    for name in ("worker", "scheduler"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_compose_settings_are_real_settings(product_settings: frozenset[str],
                                            simulator_settings: frozenset[str]) -> None:
    """Every variable a product service is given is a product setting (the simulator's, for sim)."""
    for name, service in _checus_services().items():
        known = simulator_settings if name == "sim" else product_settings
        unknown = set(service.get("environment", {})) - known - RUNTIME_VARIABLES
        assert not unknown, f"{name}: {sorted(unknown)}"


def test_compose_env_example_names_the_variables_compose_yaml_reads() -> None:
    """env.example (deploy/.env) lists exactly the variables compose.yaml interpolates."""
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (DEPLOY / "compose.yaml").read_text()))
    listed = set(re.findall(r"(?m)^#? ?([A-Z_][A-Z0-9_]*)=", (DEPLOY / "env.example").read_text()))
    assert listed == used


# -- systemd --------------------------------------------------------------------------------------------


def test_systemd_units_run_every_role() -> None:
    """One unit per role (the worker a template), each running the console script with arguments the CLI accepts."""
    expected = {"checus-web.service": ["web"], "checus-worker@.service": ["work"], "checus-api.service": ["api"],
                "checus-scheduler.service": ["scheduler"], "checus-db-upgrade.service": ["db", "upgrade"]}
    units = _units()
    assert set(units) == set(expected)
    for name, args in expected.items():
        [exec_start] = _values(units[name], "ExecStart")
        argv = shlex.split(exec_start)
        assert Path(argv[0]).is_absolute() and Path(argv[0]).name == CONSOLE_SCRIPT, name
        assert argv[1:] == args, name
        assert _cli_accepts(args), name
        assert _values(units[name], "EnvironmentFile") == ["/etc/checus/checus.env"], name
        assert _values(units[name], "User") not in ([], ["root"]), name
        if name != "checus-db-upgrade.service":
            assert _values(units[name], "Restart") == ["on-failure"], name
            assert _values(units[name], "WantedBy", "Install") == ["multi-user.target"], name
    assert _values(units["checus-db-upgrade.service"], "Type") == ["oneshot"]


def test_systemd_units_are_hardened() -> None:
    """The hardening options every unit must carry."""
    required = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                "PrivateDevices": "yes", "CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes", "UMask": "0077"}
    for name, unit in _units().items():
        for key, value in required.items():
            assert _values(unit, key) == [value], f"{name}: {key}"


def test_systemd_keys_come_from_credentials(product_settings: frozenset[str]) -> None:
    """Keys arrive through LoadCredential= as *_FILE settings; web gets the public keys only, the scheduler none."""
    for name, unit in _units().items():
        credentials = dict(value.split(":", 1) for value in _values(unit, "LoadCredential"))
        env = {k: v for k, v in _unit_environment(unit).items() if k.endswith("_FILE")}
        assert set(_unit_environment(unit)) <= product_settings, name
        assert PRIVATE_KEY_SETTING not in env and PUBLIC_KEYS_SETTING not in env, name
        assert {v.removeprefix("%d/") for v in env.values()} == set(credentials), name
        assert all(path.startswith("/etc/checus/keys/") for path in credentials.values()), name
    assert set(_unit_environment(_units()["checus-web.service"])) == {f"{PUBLIC_KEYS_SETTING}_FILE"}
    for name in ("checus-worker@.service", "checus-api.service"):
        assert {k for k in _unit_environment(_units()[name]) if k.endswith("_FILE")} == {
            f"{PRIVATE_KEY_SETTING}_FILE", f"{PUBLIC_KEYS_SETTING}_FILE"}, name
    assert not _values(_units()["checus-scheduler.service"], "LoadCredential")


#: the worker template's instance names (deploy/README.md: `checus-worker@{01..04}`, two digits up to 99)
INSTANCE_NAMES = [f"{n:02d}" for n in range(1, 100)]


def _instance_settings(unit: dict[str, list[tuple[str, str]]], instance: str) -> Settings:
    """The settings the unit's Environment= gives instance ``instance`` (%i), parsed by the product (but
    the key files, which exist only under the service's credentials directory %d)."""
    return Settings.from_env({k: v.replace("%i", instance) for k, v in _unit_environment(unit).items()
                              if not v.startswith("%d/")})


def test_systemd_worker_instances_each_get_their_own_metrics_port() -> None:
    """Instances @01 … @99 get 99 distinct unprivileged ports, apart from the range web, the scheduler and
    the api take from the env file's CHECUS_METRICS_PORT (the first free from it, span 100)."""
    unit = _units()["checus-worker@.service"]
    ports = [_instance_settings(unit, name).role_metrics_ports["work"] for name in INSTANCE_NAMES]
    assert ports[:2] == [9301, 9302] and len(set(ports)) == len(ports), ports
    assert all(1024 <= port <= 65535 for port in ports), ports
    [base] = re.findall(r"(?m)^#? ?CHECUS_METRICS_PORT=(\d+)", (SYSTEMD / "checus.env.example").read_text())
    shared = range(int(base), int(base) + SEARCH_SPAN)
    assert not set(ports) & set(shared), f"worker ports overlap {shared}"
    others = [_unit_environment(u) for n, u in _units().items() if n != "checus-worker@.service"]
    assert not any(k.startswith("CHECUS_METRICS_PORT") for env in others for k in env)


def test_systemd_environment_file_example_names_real_settings(product_settings: frozenset[str]) -> None:
    """checus.env.example sets real settings, and neither keys nor key paths (the units set those)."""
    example = _env_file(SYSTEMD / "checus.env.example")
    assert set(example) <= product_settings
    assert not {k for k in example if k.startswith((PRIVATE_KEY_SETTING, PUBLIC_KEYS_SETTING))}
    assert {"REDIS_URL", "DATABASE_URL", "CHECUS_NOTIFY_BASE_URL"} <= set(example)


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd): the units were not verified")
    return found


def _units_for_analysis(tmp_path: Path) -> list[Path]:
    """The units, with ExecStart pointing at this environment's console script (verify checks it exists)."""
    script = Path(sys.executable).parent / CONSOLE_SCRIPT
    assert script.exists(), script
    paths = []
    for source in sorted(SYSTEMD.glob("*.service")):
        target = tmp_path / source.name.replace("@.service", f"@{INSTANCE_NAMES[0]}.service")
        target.write_text(re.sub(rf"(?m)^ExecStart=\S*/{CONSOLE_SCRIPT}", f"ExecStart={script}", source.read_text()))
        paths.append(target)
    return paths


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts every unit without a single warning (an unknown key is only a warning)."""
    analyze = _systemd_analyze()
    paths = _units_for_analysis(tmp_path)
    result = subprocess.run([analyze, "verify", *map(str, paths)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(paths[0].read_text().replace("NoNewPrivileges=", "NoNewPrivilegs="))
    result = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60, check=False)
    assert "Unknown key" in result.stderr, "verify must report a misspelt key"


def test_systemd_security_exposure_is_low(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates every unit at most 2.0 ("OK") on its 0–10 exposure scale."""
    analyze = _systemd_analyze()
    for path in _units_for_analysis(tmp_path):
        result = subprocess.run([analyze, "security", "--offline=true", "--threshold=20", str(path)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{path.name}: {result.stdout.splitlines()[-1:]}"


# -- Dockerfile ------------------------------------------------------------------------------------------


def test_dockerfile_builds_on_python_slim_and_runs_the_console_script_as_non_root() -> None:
    """python:3.11-slim stages; ENTRYPOINT is the console script of pyproject; a non-root USER; `web` by default."""
    assert _instructions("FROM") and all(f.split()[0] == "python:3.11-slim" for f in _instructions("FROM"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {CONSOLE_SCRIPT: "worker.cli:entrypoint"}
    final = _final_stage()
    [entrypoint] = [json.loads(a) for i, a in final if i == "ENTRYPOINT"]
    assert entrypoint == [CONSOLE_SCRIPT]
    [command] = [json.loads(a) for i, a in final if i == "CMD"]
    assert command == ["web"] and _cli_accepts(command)
    [user] = [a for i, a in final if i == "USER"]
    assert user.split(":")[0] not in {"root", "0"}
    assert cli.commands.keys() >= {"web", "work", "scheduler", "db", "sim"}


def test_dockerfile_installs_the_project_and_copies_no_keys() -> None:
    """It copies only the package sources, installs them with `pip install .`, and bakes in no secret."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied: set[str] = set()
    for arguments in _instructions("COPY"):
        parts = arguments.split()
        if parts[0].startswith("--from="):
            continue
        sources = [s.rstrip("/") for s in parts[:-1]]
        assert "." not in sources, "copying the whole context could bring .checus-sim/ keys or .venv"
        assert all((ROOT / s).exists() for s in sources), sources
        copied |= set(sources)
    assert copied == {"pyproject.toml", "README.md"} | {p.split(".")[0] for p in packages}
    runs = " && ".join(_instructions("RUN"))
    assert re.search(r"\bpip install \.(\s|$)", runs)
    assert f"{CONSOLE_SCRIPT} --help" in runs, "the build proves the console script starts"
    ignore = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    assert ignore[0] == "**", "the build context starts from nothing"
    assert {line[1:].rstrip("/") for line in ignore if line.startswith("!")} == copied
    assert not _instructions("ARG"), "no build argument: nothing secret is passed to the build"
    env_text = " ".join(_instructions("ENV"))
    assert not re.search(r"(KEY|SECRET|PASSWORD|DATABASE_URL|REDIS_URL)\w*=", env_text)


def test_dockerfile_environment_names_real_settings(product_settings: frozenset[str]) -> None:
    """ENV sets the listening address for containers (0.0.0.0) and otherwise only runtime variables."""
    names = {m.group(1) for a in _instructions("ENV") for m in re.finditer(r"([A-Z_][A-Z0-9_]*)=", a)}
    assert names - product_settings <= RUNTIME_VARIABLES | BUILD_VARIABLES
    assert f"CHECUS_RECEIVER_HOST={ALL_INTERFACES}" in " ".join(_instructions("ENV"))
    assert _instructions("EXPOSE") == ["8080"]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    class Handler(_Health):
        status = 200

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), Handler
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_healthcheck_follows_healthz(health_server: tuple[int, type[_Health]]) -> None:
    """The image's HEALTHCHECK exits 0 when /healthz on CHECUS_RECEIVER_PORT answers 200, non-zero on 503."""
    [healthcheck] = _instructions("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"] and "/healthz" in command[2]
    assert "/healthz" in _receiver_get_routes()
    port, handler = health_server

    def run() -> int:
        env = {"CHECUS_RECEIVER_PORT": str(port)}
        return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30,
                              check=False).returncode

    assert run() == 0
    handler.status = 503
    assert run() != 0


# -- documentation ---------------------------------------------------------------------------------------


def test_readme_covers_each_way_to_run_and_redis_failover() -> None:
    """deploy/README.md explains compose, Kubernetes, systemd, honcho, scaling out and Redis failover."""
    text = (DEPLOY / "README.md").read_text()
    for topic in ("docker compose", "kubectl apply -k", "systemctl", "honcho", "noeviction", "appendonly",
                  "next_poll_at", "checus-worker status", "fail"):
        assert topic in text, topic
