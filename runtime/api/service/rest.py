"""The SDK's ``RestClient``: training runs, checkpoints (list, delete, weights info) and signed
download URLs of external weights. Synchronous: these read and write the store, not the engine."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ...errors import UnknownModelError, UserError
from .. import requests as rq
from ..checkpoints import CheckpointRef, check_component
from ..external import FileGrant, is_safe_relative, iso
from ..tenants import is_tenant_name
from .core import ServiceCore


class CheckpointRestOps(ServiceCore):
    def training_run(self, tenant: str, model_id: str) -> dict[str, Any]:
        info = self._require_run(tenant, model_id)
        checkpoints = self.store.list(tenant, model_id)
        live = self.registry.find_model(model_id)
        mine = live is not None and live.tenant == tenant
        last = live.last_request.isoformat() if mine else info["created"]
        return {
            "training_run_id": model_id,
            "base_model": info["base_model"],
            "model_owner": tenant,
            "is_lora": True,
            "corrupted": False,
            "lora_rank": info["lora"]["rank"],
            "last_request_time": last,
            "last_checkpoint": _newest(checkpoints, "training"),
            "last_sampler_checkpoint": _newest(checkpoints, "sampler"),
            "user_metadata": info.get("user_metadata"),
        }

    def training_runs(self, tenant: str, limit: int, offset: int) -> dict[str, Any]:
        ids = self.store.models(tenant)
        runs = [self.training_run(tenant, model_id) for model_id in ids[offset: offset + limit]]
        return {"training_runs": runs, "cursor": {"offset": offset, "limit": limit, "total_count": len(ids)}}

    def checkpoints(self, tenant: str, model_id: str | None, limit: int | None = None,
                    offset: int = 0) -> dict[str, Any]:
        """One run's checkpoints (all of them), or the tenant's across runs (``model_id=None``, paged)."""
        if model_id is not None:
            self._require_run(tenant, model_id)
        found = self.store.list(tenant, model_id)
        if limit is None:
            return {"checkpoints": found}
        return {"checkpoints": found[offset: offset + limit],
                "cursor": {"offset": offset, "limit": limit, "total_count": len(found)}}

    def _require_run(self, tenant: str, model_id: str) -> dict[str, Any]:
        info = self.store.read_run(tenant, check_component(model_id, "model id"))
        if info is None:
            raise UnknownModelError(f"no training run {model_id!r}")
        return info

    def delete_checkpoint(self, tenant: str, model_id: str, checkpoint_id: str) -> None:
        self.store.delete(tenant, CheckpointRef.parse(f"tinker://{model_id}/{checkpoint_id}"))

    def weights_info(self, tenant: str, req: rq.WeightsInfo) -> dict[str, Any]:
        ref = CheckpointRef.parse(req.tinker_path)
        self.store.require(tenant, ref)
        info = self.store.read_run(tenant, ref.model_id) or {}
        lora = info.get("lora", {})
        state = self.store.state_dir(tenant, ref) / "kubetune_state.json"
        if state.is_file():  # the checkpoint's own record wins over the run's
            header = json.loads(state.read_text())
            lora, info = header["lora"], {"base_model": header["base_model"]}
        return {"base_model": info.get("base_model", self.config.base_model), "is_lora": True,
                "lora_rank": lora.get("rank"), "train_unembed": lora.get("train_unembed"),
                "train_mlp": lora.get("train_mlp"), "train_attn": lora.get("train_attn")}

    def external_weights_urls(self, tenant: str, model_id: str, checkpoint_id: str,
                              base_url: str) -> dict[str, Any]:
        """One signed download URL per file of an ``external_weights`` checkpoint of this tenant."""
        ref = CheckpointRef.parse(f"tinker://{model_id}/{checkpoint_id}")
        if ref.kind != "external_weights":
            raise UserError(f"{ref.tinker_path} is not an external weights checkpoint; download URLs exist "
                            "only for tinker://<model_id>/external_weights/<name>, written by "
                            "save_weights_external()")
        self.store.require(tenant, ref)  # another tenant's checkpoint is simply not found
        # "" (deleted meanwhile) never matches a checkpoint, so such URLs never serve
        created = (self.store.read_meta(tenant, ref) or {}).get("created", "")
        expires = int(time.time() + self.config.external_url_ttl_seconds)
        urls = {rel: self.signer.url(base_url, FileGrant(tenant, ref.model_id, ref.name, rel, created,
                                                         expires))
                for rel in self.store.adapter_files(tenant, ref)}
        return {"urls": urls, "expires": iso(expires)}

    def external_weights_file(self, grant: FileGrant, signature: str | None) -> Path:
        """The file a signed URL names; :class:`Forbidden` unless the URL is intact and current."""
        self.signer.verify(grant, signature, time.time())
        gone = UnknownModelError(f"{grant.tinker_path} has no file {grant.path!r}: the checkpoint was "
                                 "deleted or replaced, or the file never existed")
        # Signed URLs only name the server's own files; these checks keep it so even if the key leaked.
        if not is_tenant_name(grant.tenant) or not is_safe_relative(grant.path):
            raise gone
        ref = CheckpointRef(check_component(grant.model_id, "model id"), "external_weights",
                            check_component(grant.name, "checkpoint name"))
        meta = self.store.read_meta(grant.tenant, ref)
        if meta is None or meta["created"] != grant.created:
            raise gone
        root = self.store.sampler_dir(grant.tenant, ref).resolve()
        path = (root / grant.path).resolve()
        if not path.is_file() or not path.is_relative_to(root):  # symlinks resolve outside: refused too
            raise gone
        return path


def _newest(checkpoints: list[dict[str, Any]], checkpoint_type: str) -> dict[str, Any] | None:
    """The first (newest: the store lists newest first) checkpoint of a type."""
    return next((c for c in checkpoints if c["checkpoint_type"] == checkpoint_type), None)
