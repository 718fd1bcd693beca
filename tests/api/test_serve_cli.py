"""`kubetune serve` as a process: the CLI loads a local model, binds loopback, serves the SDK."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import tinker

from helpers.data import sft_datum
from helpers.server import ApiServer


def test_kubetune_serve_serves_the_sdk(api_server: ApiServer, tmp_path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    keys = tmp_path / "keys"
    keys.write_text("tml-cli-test-key carol\n")
    env = {**os.environ, "KUBETUNE_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "kubetune.cli", "serve", "--base-model", str(api_server.model_dir),
               "--port", str(port), "--keys-file", str(keys), "--checkpoint-dir", str(tmp_path / "ckpt")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else "server exited"
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "kubetune serve did not become ready"
            time.sleep(0.2)
        client = tinker.ServiceClient(base_url=url, api_key="tml-cli-test-key")
        rest = tinker.RestClient(base_url=url, api_key="tml-cli-test-key")
        capabilities = rest.get_server_capabilities().result()
        assert [m.model_name for m in capabilities.supported_models] == [str(api_server.model_dir.resolve())]
        trainer = client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=0).result()
        out = trainer.forward_backward([sft_datum([2, 10, 11, 12, 1], 2)], "cross_entropy").result()
        assert out.metrics["loss:sum"] > 0
        client.close("success").result()
        assert (tmp_path / "ckpt" / "carol" / trainer.model_id / "run.json").is_file()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
