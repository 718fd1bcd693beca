"""External weights through the real SDK: save_weights_external, signed download URLs, and their refusals."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import tinker
from peft import PeftModel
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file
from tinker import types
from transformers import AutoModelForCausalLM

from kubetune.api.checkpoints import CheckpointRef
from kubetune.api.external import FileGrant, Forbidden, UrlSigner

from helpers.data import sft_datum
from helpers.server import ApiServer

DATA = [sft_datum([2, 60, 61, 62, 63, 1], 3), sft_datum([2, 70, 71, 1], 2)]
FILES = {"adapter_config.json", "adapter_model.safetensors"}
AGE_KEY = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


@pytest.fixture(scope="module")
def exported(api_server: ApiServer):
    """A run trained two steps, exported as ``final`` and saved for sampling in the same state."""
    client = api_server.client("alice")
    trainer = client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=41).result()
    for _ in range(2):
        trainer.forward_backward(DATA, "cross_entropy")
        trainer.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    external = trainer.save_weights_external("final", ttl_seconds=7200).result().path
    sampler = trainer.save_weights_for_sampler("same-state").result().path
    yield trainer, external, sampler
    client.close("success").result()


def rest(api_server: ApiServer, tenant: str = "alice") -> tinker.RestClient:
    return tinker.RestClient(base_url=api_server.url, api_key=api_server.keys[tenant])


def download(urls: dict[str, str]) -> dict[str, bytes]:
    """Every file, with plain httpx and no API key, as a client on another machine would."""
    files = {}
    for rel, url in urls.items():
        reply = httpx.get(url, timeout=30)
        assert reply.status_code == 200, reply.text
        files[rel] = reply.content
    return files


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=str(httpx.QueryParams(query))))


def with_file(url: str, rel: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rsplit("/", 1)[0] + "/" + rel))


def test_download_is_the_same_peft_adapter_as_save_weights_for_sampler(api_server: ApiServer, exported,
                                                                      tmp_path: Path) -> None:
    trainer, external, sampler = exported
    assert external == f"tinker://{trainer.model_id}/external_weights/final"
    answer = rest(api_server).get_external_weights_urls(external).result()
    assert set(answer.urls) == FILES
    download_prefix = api_server.url + "/api/v1/external_weights/download/"
    assert all(url.startswith(download_prefix) for url in answer.urls.values())
    assert 3500 < answer.expires.timestamp() - time.time() <= 3600  # one hour by default
    files = download(answer.urls)

    on_disk = api_server.service.store.sampler_dir("alice", CheckpointRef.parse(sampler))
    expected = load_file(on_disk / "adapter_model.safetensors")
    got = load_safetensors(files["adapter_model.safetensors"])
    assert got.keys() == expected.keys() and any("lora_B" in name for name in got)
    for name, tensor in expected.items():
        assert got[name].equal(tensor), name
    assert any(t.abs().sum() > 0 for name, t in got.items() if "lora_B" in name)  # trained, not init
    config = json.loads(files["adapter_config.json"])
    assert config == json.loads((on_disk / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"]) == ("LORA", 2)

    for rel, body in files.items():  # and PEFT loads it onto the base model, as on the client's machine
        (tmp_path / rel).write_bytes(body)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(api_server.model_dir), tmp_path)
    assert any(name.endswith("lora_B.default.weight") and value.abs().sum() > 0
               for name, value in peft.named_parameters())


def test_listed_as_external_and_names_are_not_reused(api_server: ApiServer, exported) -> None:
    trainer, external, _ = exported
    checkpoints = rest(api_server).list_checkpoints(trainer.model_id).result().checkpoints
    listed = {c.tinker_path: c for c in checkpoints}
    checkpoint = listed[external]
    assert (checkpoint.checkpoint_type, checkpoint.checkpoint_id) == ("external", "external_weights/final")
    assert checkpoint.size_bytes > 0 and checkpoint.expires_at is not None  # ttl_seconds honoured
    assert 7100 < (checkpoint.expires_at - checkpoint.time).total_seconds() <= 7200
    with pytest.raises(tinker.RequestFailedError, match="already exists"):
        trainer.save_weights_external("final").result()


def test_delete_removes_the_checkpoint_and_its_urls(api_server: ApiServer, exported) -> None:
    trainer, _, _ = exported
    path = trainer.save_weights_external("to-delete").result().path
    alice = rest(api_server)
    urls = alice.get_external_weights_urls(path).result().urls
    assert httpx.get(urls["adapter_config.json"]).status_code == 200

    alice.delete_checkpoint_from_tinker_path(path).result()
    assert path not in {c.tinker_path for c in alice.list_checkpoints(trainer.model_id).result().checkpoints}
    for url in urls.values():
        assert httpx.get(url).status_code == 404
    with pytest.raises(tinker.NotFoundError):
        alice.get_external_weights_urls(path).result()

    # The same name again is a new checkpoint: the old URLs stay dead.
    trainer.save_weights_external("to-delete").result()
    assert httpx.get(urls["adapter_config.json"]).status_code == 404


def test_another_tenant_cannot_list_urls(api_server: ApiServer, exported) -> None:
    trainer, external, _ = exported
    bob = rest(api_server, "bob")
    with pytest.raises(tinker.NotFoundError):
        bob.get_external_weights_urls(external).result()
    with pytest.raises(tinker.NotFoundError):
        bob.list_checkpoints(trainer.model_id).result()
    url = rest(api_server).get_external_weights_urls(external).result().urls["adapter_config.json"]
    assert httpx.get(with_query(url, tenant="bob")).status_code == 403  # the tenant is signed too


def test_altered_expired_and_escaping_urls_are_refused(api_server: ApiServer, exported) -> None:
    _, external, _ = exported
    urls = rest(api_server).get_external_weights_urls(external).result().urls
    url = urls["adapter_config.json"]
    signature = parse_qs(urlsplit(url).query)["signature"][0]

    tampered = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    forged = {
        "tampered signature": with_query(url, signature=tampered),
        "missing signature": with_query(url, signature=""),
        "other file, same signature": with_file(url, "adapter_model.safetensors"),
        "later expiry": with_query(url, expires=str(int(time.time()) + 10 * 3600)),
        "traversal": with_file(url, "%2E%2E/%2E%2E/run.json"),
    }
    for what, bad in forged.items():
        reply = httpx.get(bad)
        assert reply.status_code == 403, what
        assert reply.json()["category"] == "user" and "signature" in reply.json()["error"], what

    query = parse_qs(urlsplit(url).query)
    service = api_server.service
    ref = CheckpointRef.parse(external)

    def signed(rel: str, expires: int) -> str:
        """A URL as if this server had issued it; dots encoded so httpx does not resolve '..' itself."""
        grant = FileGrant("alice", ref.model_id, ref.name, rel, query["created"][0], expires)
        segments = (ref.model_id, ref.name, *rel.split("/"))
        path = "/".join(quote(s, safe="").replace(".", "%2E") for s in segments)
        params = {"tenant": "alice", "created": grant.created, "expires": expires,
                  "signature": service.signer.signature(grant)}
        return f"{api_server.url}/api/v1/external_weights/download/{path}?{urlencode(params)}"

    fresh = httpx.get(signed("adapter_config.json", int(time.time()) + 60))
    assert fresh.status_code == 200  # the helper signs as the server does
    expired = httpx.get(signed("adapter_config.json", int(time.time()) - 1))
    assert expired.status_code == 403 and "expired" in expired.json()["error"]
    assert "get_external_weights_urls" in expired.json()["error"]
    for escape in ("../../run.json", "../../../bob/x", "./adapter_config.json", "/etc/passwd"):
        # a valid signature: only the path guard stops it
        reply = httpx.get(signed(escape, int(time.time()) + 60))
        assert reply.status_code == 404 and "has no file" in reply.json()["error"], escape

    assert httpx.get(url).content == download(urls)["adapter_config.json"]  # the server keeps serving
    assert httpx.get(api_server.url + "/healthz").json() == {"status": "ok"}


def test_urls_only_for_external_checkpoints(api_server: ApiServer, exported) -> None:
    trainer, _, sampler = exported
    reply = httpx.get(f"{api_server.url}/api/v1/training_runs/{trainer.model_id}/checkpoints/sampler_weights/"
                      "same-state/external_weights_urls", headers={"X-API-Key": api_server.keys["alice"]})
    assert reply.status_code == 400 and reply.json()["category"] == "user"
    assert "not an external weights checkpoint" in reply.json()["error"]
    unsigned = httpx.get(api_server.url + f"/api/v1/training_runs/{trainer.model_id}/checkpoints/"
                         "external_weights/final/external_weights_urls")
    assert unsigned.status_code == 401  # listing URLs needs the API key


def test_age_encryption_is_refused_in_turn(api_server: ApiServer, exported) -> None:
    trainer, _, _ = exported
    refusal = "age_encryption_recipients is not supported"
    with pytest.raises(tinker.RequestFailedError, match=refusal) as refused:
        trainer.save_weights_external("encrypted", age_encryption_recipients=[AGE_KEY]).result()
    assert refused.value.category == types.RequestErrorCategory.User
    assert "age -r" in str(refused.value)  # says how to encrypt after download
    start = time.monotonic()
    path = trainer.save_weights_external("after-refusal").result().path  # no seq_id gap left behind
    assert time.monotonic() - start < 1.5 and path.endswith("/external_weights/after-refusal")


@pytest.fixture
def http(api_server: ApiServer):
    with httpx.Client(base_url=api_server.url + "/api/v1", headers={"X-API-Key": api_server.keys["alice"]},
                      timeout=30) as client:
        yield client


def test_raw_response_shapes_and_metrics(api_server: ApiServer, http: httpx.Client) -> None:

    def result(future: dict) -> dict:
        while (body := http.post("/retrieve_future", json={"request_id": future["request_id"]}).json()).get(
                "type") == "try_again":
            pass
        return body

    session = http.post("/create_session", json={"tags": []}).json()["session_id"]
    model_id = result(http.post("/create_model", json={"session_id": session, "model_seq_id": 1,
                                                       "base_model": str(api_server.model_dir),
                                                       "lora_config": {"rank": 2}}).json())["model_id"]
    save = {"model_id": model_id, "path": "raw", "type": "save_weights_external"}
    refused = result(http.post("/save_weights_external",
                               json=save | {"seq_id": 1, "age_encryption_recipients": [AGE_KEY]}).json())
    assert set(refused) == {"error", "category"} and refused["category"] == "user"
    saved = result(http.post("/save_weights_external", json=save | {"seq_id": 2}).json())
    assert saved["type"] == "save_weights_external"
    assert saved["path"] == f"tinker://{model_id}/external_weights/raw"
    checkpoint = f"/training_runs/{model_id}/checkpoints/external_weights/raw"
    urls = http.get(f"{checkpoint}/external_weights_urls").json()
    assert saved["size_bytes"] == sum(len(body) for body in download(urls["urls"]).values())
    http.post(f"/sessions/{session}/finish")

    metrics = httpx.get(api_server.url + "/metrics").text
    checkpoint_route = "/api/v1/training_runs/{model_id}/checkpoints/{checkpoint_id:path}"
    for endpoint in ("/api/v1/save_weights_external", f"{checkpoint_route}/external_weights_urls",
                     "/api/v1/external_weights/download/{model_id}/{name}/{file_path:path}"):
        assert f'endpoint="{endpoint}",outcome="2xx"' in metrics, endpoint


def test_replicas_sharing_a_secret_accept_each_others_urls() -> None:
    grant = FileGrant("alice", "s:train:1", "final", "adapter_config.json", "2026-01-01T00:00:00+00:00",
                      2**31)
    secret = "0123456789abcdef" * 4
    UrlSigner(secret).verify(grant, UrlSigner(secret).signature(grant), now=0)
    with pytest.raises(Forbidden, match="invalid signature"):
        UrlSigner().verify(grant, UrlSigner().signature(grant), now=0)  # random per-process keys differ
    with pytest.raises(ValueError, match="at least 32"):
        UrlSigner("too-short")
