"""Signed download URLs for ``external_weights`` checkpoints.

``save_weights_external`` writes a PEFT adapter; ``RestClient.get_external_weights_urls`` answers one
URL per file. Like a cloud-storage signed URL, a URL needs no API key: it names the tenant, model id,
checkpoint name, file and expiry, and carries an HMAC-SHA256 over them. The HMAC also covers the
checkpoint's creation time, so a URL dies with its checkpoint even if the name is reused later.

The key is random per process unless ``ServerConfig.url_signing_secret`` (``KUBETUNE_URL_SIGNING_SECRET``)
sets it; replicas that serve one address must share it, or a URL only works on the replica that
issued it (and stops working when that process restarts).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from urllib.parse import quote, urlencode

SECRET_ENV = "KUBETUNE_URL_SIGNING_SECRET"
DOWNLOAD_PREFIX = "/api/v1/external_weights/download"
MIN_SECRET_CHARS = 32
_VERSION = "kubetune-external-weights-v1"  # changing the signed message's layout must change this


class Forbidden(Exception):
    """HTTP 403: a download URL that was altered, not issued by this server, or has expired."""


@dataclass(frozen=True)
class FileGrant:
    """What one signed URL allows: downloading one file of one checkpoint until ``expires``."""

    tenant: str
    model_id: str
    name: str
    path: str  # '/'-separated, relative to the checkpoint's adapter directory
    created: str  # the checkpoint's creation time: binds the URL to this incarnation of the name
    expires: int  # unix seconds

    @property
    def tinker_path(self) -> str:
        return f"tinker://{self.model_id}/external_weights/{self.name}"

    def message(self) -> bytes:
        # JSON keeps the fields unambiguous whatever characters they hold (no delimiter injection).
        fields = [_VERSION, self.tenant, self.model_id, self.name, self.path, self.created, self.expires]
        return json.dumps(fields, separators=(",", ":")).encode()


class UrlSigner:
    """Signs and checks download URLs with one HMAC-SHA256 key."""

    def __init__(self, secret: str | None = None):
        if secret is None:
            self._key = secrets.token_bytes(32)
        elif len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"the URL signing secret ({SECRET_ENV}) must be at least {MIN_SECRET_CHARS} "
                             "characters; make one with `openssl rand -hex 32`")
        else:
            self._key = secret.encode()

    def signature(self, grant: FileGrant) -> str:
        return hmac.new(self._key, grant.message(), hashlib.sha256).hexdigest()

    def url(self, base_url: str, grant: FileGrant) -> str:
        """The download URL of ``grant`` on the server at ``base_url`` (no trailing slash)."""
        segments = [grant.model_id, grant.name, *grant.path.split("/")]
        query = {"tenant": grant.tenant, "created": grant.created, "expires": str(grant.expires),
                 "signature": self.signature(grant)}
        path = "/".join(quote(s, safe="") for s in segments)
        return f"{base_url}{DOWNLOAD_PREFIX}/{path}?{urlencode(query)}"

    def verify(self, grant: FileGrant, signature: str | None, now: float) -> None:
        """Raises :class:`Forbidden` unless ``signature`` is ours for ``grant`` and it has not expired."""
        if not signature or not hmac.compare_digest(self.signature(grant), signature):
            raise Forbidden("invalid signature: this download URL was altered or was not issued by this "
                            "server; get fresh URLs with "
                            f"RestClient.get_external_weights_urls({grant.tinker_path!r})")
        if grant.expires < now:
            raise Forbidden(f"this download URL expired at {iso(grant.expires)}; get fresh URLs with "
                            f"RestClient.get_external_weights_urls({grant.tinker_path!r})")


def parse_expires(value: str | None) -> int:
    """The ``expires`` query value; a missing or malformed one is a forged URL."""
    if value is None or not value.isdigit() or len(value) > 12:
        raise Forbidden("malformed download URL (expires); get fresh URLs with "
                        "RestClient.get_external_weights_urls")
    return int(value)


def is_safe_relative(path: str) -> bool:
    """A plain relative file path: no '..', no absolute path, no empty or backslash segments."""
    parts = path.split("/")
    return (bool(path) and "\\" not in path and "\x00" not in path and not PurePosixPath(path).is_absolute()
            and all(part not in ("", ".", "..") for part in parts))


def iso(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, timezone.utc).isoformat()
