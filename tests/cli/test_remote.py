"""`kubetune submit` / `kubetune schedule` against a stand-in KFP API that records every request.

There is no Kubeflow Pipelines backend on these machines. ``KfpApiStandIn`` is a loopback HTTP
server that answers the v2beta1 endpoints the real ``kfp.Client`` calls with the smallest valid
JSON and records method, path, query, headers and body, so the tests check what the real client
library sends (the requests a cluster would receive), not what our code meant to send.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from typer.testing import CliRunner

from kubetune.cli import app


class KfpApiStandIn:
    """Stand-in for the KFP API server: experiments, pipelines, versions, runs, recurring runs."""

    def __init__(self, fail_with: int | None = None) -> None:
        self.requests: list[dict] = []
        self.experiments: list[dict] = []
        self.pipelines: list[dict] = []
        self.versions: dict[str, list[dict]] = {}
        self.fail_with = fail_with
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                record = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                          "headers": {k.lower(): v for k, v in self.headers.items()}, "raw": raw}
                if raw and "json" in (self.headers.get("Content-Type") or ""):
                    record["json"] = json.loads(raw)
                standin.requests.append(record)
                status, reply = standin.answer(record)
                body = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _named(items: list[dict], query: dict) -> list[dict]:
        if "filter" not in query:
            return items
        wanted = json.loads(query["filter"][0])["predicates"][0]["stringValue"]
        return [item for item in items if item["display_name"] == wanted]

    def answer(self, r: dict) -> tuple[int, dict]:
        path, method = r["path"], r["method"]
        if path == "/apis/v2beta1/healthz":
            return 200, {"multi_user": False}
        if self.fail_with:
            return self.fail_with, {"error": "injected failure", "code": 13}
        if path == "/apis/v2beta1/experiments":
            if method == "GET":
                return 200, {"experiments": self._named(self.experiments, r["query"])}
            experiment = {"experiment_id": f"exp-{len(self.experiments) + 1}",
                          "display_name": r["json"]["display_name"]}
            self.experiments.append(experiment)
            return 200, experiment
        if path == "/apis/v2beta1/runs" and method == "POST":
            return 200, {"run_id": "run-1", "display_name": r["json"]["display_name"]}
        if path == "/apis/v2beta1/pipelines" and method == "GET":
            return 200, {"pipelines": self._named(self.pipelines, r["query"])}
        if path == "/apis/v2beta1/pipelines/upload":
            name = r["query"]["name"][0]
            pipeline = {"pipeline_id": f"pipe-{len(self.pipelines) + 1}", "display_name": name}
            self.pipelines.append(pipeline)
            # The real server stores the uploaded YAML as the first version, named like the pipeline.
            self.versions[pipeline["pipeline_id"]] = [{"pipeline_id": pipeline["pipeline_id"],
                                                       "display_name": name, "pipeline_version_id": "ver-1"}]
            return 200, pipeline
        if path == "/apis/v2beta1/pipelines/upload_version":
            pipeline_id = r["query"]["pipelineid"][0]
            versions = self.versions[pipeline_id]
            version = {"pipeline_id": pipeline_id, "display_name": r["query"]["name"][0],
                       "pipeline_version_id": f"ver-{len(versions) + 1}"}
            versions.append(version)
            return 200, version
        match = re.fullmatch(r"/apis/v2beta1/pipelines/([^/]+)/versions", path)
        if match and method == "GET":
            return 200, {"pipeline_versions": self._named(self.versions[match.group(1)], r["query"])}
        if path == "/apis/v2beta1/recurringruns" and method == "POST":
            return 200, {"recurring_run_id": "rr-1", "display_name": r["json"]["display_name"]}
        return 404, {"error": f"stand-in has no {method} {path}"}

    def sent(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def kfp_api():
    standin = KfpApiStandIn()
    yield standin
    standin.close()


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _spec_and_platform(body: dict) -> tuple[dict, dict]:
    """``pipeline_spec`` of a run body: the spec alone, or spec + platform spec when one exists."""
    spec = body["pipeline_spec"]
    return (spec["pipeline_spec"], spec["platform_spec"]) if "pipeline_spec" in spec else (spec, {})


def _multipart_yaml_bytes(raw: bytes) -> bytes:
    """The compiled pipeline YAML inside a multipart upload."""
    start = raw.index(b"# PIPELINE DEFINITION")
    return raw[start:raw.index(b"\r\n--", start)]


def _multipart_yaml(raw: bytes) -> dict:
    """The pipeline spec (first YAML document) of a multipart upload."""
    return next(yaml.safe_load_all(_multipart_yaml_bytes(raw).decode()))


def test_submit_sends_the_compiled_pipeline_with_parameters_and_token(kfp_api):
    result = _invoke("submit", "rl_finetune", "--host", kfp_api.url, "--token", "secret-token",
                     "--param", "sft_steps=7", "--param", "training_api_url=http://kubetune-server.kubetune:8000",
                     "--experiment", "nightly", "--run-name", "try-1")
    assert result.exit_code == 0, result.output
    assert "run-1" in result.output and f"{kfp_api.url}/#/runs/details/run-1" in result.output

    # The experiment is looked up by name, then created because the backend has none.
    lookup, = kfp_api.sent("GET", "/apis/v2beta1/experiments")
    assert json.loads(lookup["query"]["filter"][0])["predicates"][0]["stringValue"] == "nightly"
    created, = kfp_api.sent("POST", "/apis/v2beta1/experiments")
    assert created["json"]["display_name"] == "nightly"

    run, = kfp_api.sent("POST", "/apis/v2beta1/runs")
    assert run["headers"]["authorization"] == "Bearer secret-token"
    body = run["json"]
    assert body["experiment_id"] == "exp-1" and body["display_name"] == "try-1"
    assert body["runtime_config"]["parameters"] == {"sft_steps": 7,
                                                    "training_api_url": "http://kubetune-server.kubetune:8000"}
    spec, platform = _spec_and_platform(body)
    assert spec["pipelineInfo"]["name"] == "kubetune-rl-finetune"
    assert set(spec["root"]["dag"]["tasks"]) >= {"train-sft", "train-ppo", "evaluate-text2sql",
                                                 "log-to-mlflow"}
    # The GPU settings travel with the run (kfp-kubernetes platform spec).
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert any("nvidia" in json.dumps(cfg) for cfg in executors.values())


def test_submit_no_gpu_leaves_out_accelerators_and_reuses_an_experiment(kfp_api):
    kfp_api.experiments.append({"experiment_id": "exp-existing", "display_name": "kubetune"})
    result = _invoke("submit", "dpo_finetune", "--host", kfp_api.url, "--no-gpu")
    assert result.exit_code == 0, result.output
    assert not kfp_api.sent("POST", "/apis/v2beta1/experiments")
    body = kfp_api.sent("POST", "/apis/v2beta1/runs")[0]["json"]
    assert body["experiment_id"] == "exp-existing"
    assert "authorization" not in kfp_api.sent("POST", "/apis/v2beta1/runs")[0]["headers"]
    spec, platform = _spec_and_platform(body)
    assert spec["pipelineInfo"]["name"] == "kubetune-dpo-finetune"
    assert "nvidia" not in json.dumps(platform) and "accelerator" not in json.dumps(spec).lower()


def test_schedule_uploads_once_then_creates_a_recurring_run_with_version_id(kfp_api):
    result = _invoke("schedule", "autoresearch", "--host", kfp_api.url, "--cron", "0 0 2 * * *",
                     "--param", 'experiments=[{"run_name": "a", "lora_rank": 8, "learning_rate": 0.0002, '
                                '"kl_coef": 0.0, "group_size": 4, "reward": "execution"}]')
    assert result.exit_code == 0, result.output
    upload, = kfp_api.sent("POST", "/apis/v2beta1/pipelines/upload")
    assert upload["query"]["name"] == ["kubetune-autoresearch"]
    assert _multipart_yaml(upload["raw"])["pipelineInfo"]["name"] == "kubetune-autoresearch"

    job, = kfp_api.sent("POST", "/apis/v2beta1/recurringruns")
    body = job["json"]
    assert body["pipeline_version_reference"] == {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-1"}
    assert "pipeline_spec" not in body  # the stored version is what runs
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert body["mode"] == "ENABLE" and int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["runtime_config"]["parameters"]["experiments"][0]["run_name"] == "a"
    assert "rr-1" in result.output

    # Same code again: the pipeline exists, so a version named by the YAML's hash is added once ...
    assert _invoke("schedule", "autoresearch", "--host", kfp_api.url, "--cron", "0 30 3 * * 1").exit_code == 0
    added, = kfp_api.sent("POST", "/apis/v2beta1/pipelines/upload_version")
    digest = hashlib.sha256(_multipart_yaml_bytes(added["raw"])).hexdigest()[:12]
    assert added["query"]["name"] == [f"kubetune-autoresearch-{digest}"]
    assert added["query"]["pipelineid"] == ["pipe-1"]
    # ... and reused the third time.
    assert _invoke("schedule", "autoresearch", "--host", kfp_api.url, "--cron", "0 0 4 * * *").exit_code == 0
    assert len(kfp_api.sent("POST", "/apis/v2beta1/pipelines/upload_version")) == 1
    assert len(kfp_api.sent("POST", "/apis/v2beta1/pipelines/upload")) == 1
    refs = [r["json"]["pipeline_version_reference"]["pipeline_version_id"]
            for r in kfp_api.sent("POST", "/apis/v2beta1/recurringruns")]
    assert refs == ["ver-1", "ver-2", "ver-2"]


def test_schedule_rejects_a_five_field_cron_before_any_request(kfp_api):
    result = CliRunner().invoke(app, ["schedule", "rl_finetune", "--host", kfp_api.url,
                                      "--cron", "0 2 * * *"])
    assert result.exit_code == 2
    assert "6" in result.output and "'0 0 2 * * *'" in result.output
    assert kfp_api.requests == []


def test_unknown_parameter_and_pipeline_fail_before_any_request(kfp_api):
    bad_param = CliRunner().invoke(app, ["submit", "rl_finetune", "--host", kfp_api.url,
                                         "--param", "stepz=3"])
    assert bad_param.exit_code == 2 and "stepz" in bad_param.output
    bad_pipeline = CliRunner().invoke(app, ["submit", "nope", "--host", kfp_api.url])
    assert bad_pipeline.exit_code == 2 and "autoresearch" in bad_pipeline.output
    assert kfp_api.requests == []


def test_backend_errors_become_a_message_not_a_traceback():
    standin = KfpApiStandIn(fail_with=500)
    try:
        result = CliRunner().invoke(app, ["submit", "rl_finetune", "--host", standin.url])
    finally:
        standin.close()
    assert result.exit_code == 1
    assert "HTTP 500" in result.output and "--host" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
