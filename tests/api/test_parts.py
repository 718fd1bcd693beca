"""The server's parts on their own: API keys, tinker:// paths, the checkpoint store, the future store."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from kubetune.api.checkpoints import CheckpointRef, CheckpointStore
from kubetune.api.futures import FutureStore, JsonResult
from kubetune.api.tenants import Tenants, load_keys
from kubetune.errors import UnknownModelError, UserError


def test_keys_file_env_and_tenant_resolution(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\ntml-aaaaaaaaaa alice\n\ntml-bbbbbbbbbb bob  # second\n")
    keys = load_keys(keys_file, "tml-cccccccccc=carol")
    assert keys == {"tml-aaaaaaaaaa": "alice", "tml-bbbbbbbbbb": "bob", "tml-cccccccccc": "carol"}
    tenants = Tenants(keys)
    assert tenants.resolve("tml-bbbbbbbbbb") == "bob"
    assert tenants.resolve("tml-unknown-key") is None and tenants.resolve("sk-aaaaaaaaaa") is None
    assert tenants.resolve(None) is None
    (tmp_path / "keys.json").write_text('{"tml-dddddddddd": "dave"}')
    assert load_keys(tmp_path / "keys.json") == {"tml-dddddddddd": "dave"}
    with pytest.raises(ValueError, match="must start with 'tml-'"):
        load_keys(None, "sk-123456789=eve")
    with pytest.raises(ValueError, match="tenant name"):
        load_keys(None, "tml-eeeeeeeeee=../eve")
    assert load_keys(None, None) is None


def test_open_mode_gives_each_key_its_own_tenant() -> None:
    tenants = Tenants(None)
    first, second = tenants.resolve("tml-first-key"), tenants.resolve("tml-second-key")
    assert first and second and first != second and "first" not in first  # the key never names a directory
    assert tenants.resolve("tml-first-key") == first


def test_tinker_paths_parse_and_refuse_escapes() -> None:
    ref = CheckpointRef.parse("tinker://abc:train:0/weights/final")
    assert (ref.model_id, ref.kind, ref.name) == ("abc:train:0", "weights", "final")
    assert ref.tinker_path == "tinker://abc:train:0/weights/final" and ref.checkpoint_id == "weights/final"
    for bad in ("tinker://m/weights/..", "tinker://../weights/x", "tinker://m/weights/a/b",
                "s3://m/weights/x", "tinker://m/other/x", "tinker://m/weights/.hidden"):
        with pytest.raises(UserError):
            CheckpointRef.parse(bad)


def test_checkpoint_store_is_per_tenant(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    ref = CheckpointRef("run1", "sampler_weights", "s1")
    store.sampler_dir("alice", ref).mkdir(parents=True)
    (store.sampler_dir("alice", ref) / "adapter_model.safetensors").write_bytes(b"x" * 10)
    assert not store.exists("alice", ref)  # not complete until its metadata is written
    described = store.mark_complete("alice", ref, user_metadata={"k": "v"}, ttl_seconds=3600)
    assert described["checkpoint_type"] == "sampler" and described["size_bytes"] > 10
    assert described["expires_at"] is not None
    assert [c["tinker_path"] for c in store.list("alice")] == [ref.tinker_path]
    assert store.list("bob") == []
    with pytest.raises(UnknownModelError):
        store.require("bob", ref)
    store.delete("alice", ref)
    assert store.list("alice") == [] and not store.checkpoint_dir("alice", ref).exists()


def test_future_store_long_poll_crosses_threads() -> None:
    async def scenario() -> None:
        store = FutureStore()
        store.bind_loop(asyncio.get_running_loop())
        record = store.create("alice", "op")
        assert store.get("bob", record.request_id) is None  # another tenant's id reads as unknown
        assert await store.wait(record, 0.05) is None  # not ready: the poll answers try_again
        threading.Timer(0.05, store.complete, args=(record, JsonResult({"ok": 1}))).start()
        assert await store.wait(record, 5) == JsonResult({"ok": 1})
        assert store.pending() == 0

    asyncio.run(scenario())
