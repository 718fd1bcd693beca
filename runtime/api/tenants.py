"""API keys and the tenants they belong to.

The SDK insists on keys that start with ``tml-`` and sends them as ``X-API-Key``. A keys file maps
each key to a tenant; every model, sampler, future and checkpoint belongs to exactly one tenant and
is invisible to the others.

Keys file (``--keys-file``), one key per line, ``#`` comments allowed::

    tml-3f9c0e…  alice
    tml-77ab41…  bob

or a JSON object ``{"tml-3f9c0e…": "alice"}``. The ``KUBETUNE_API_KEYS`` environment variable takes
``tml-3f9c0e…=alice,tml-77ab41…=bob``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from pathlib import Path

KEY_PREFIX = "tml-"
KEYS_ENV = "KUBETUNE_API_KEYS"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # tenants name directories


class Tenants:
    """Resolves an API key to its tenant.

    Args:
        keys: key -> tenant; ``None`` for open mode, where each distinct well-formed key is a
            tenant of its own (named after a hash of the key, so the key never reaches disk).
    """

    def __init__(self, keys: Mapping[str, str] | None = None):
        if keys is not None:
            for key, tenant in keys.items():
                _check(key, tenant)
        self._keys = dict(keys) if keys is not None else None

    @property
    def open_mode(self) -> bool:
        return self._keys is None

    def resolve(self, key: str | None) -> str | None:
        """The tenant of ``key``, or ``None`` if the key is missing, malformed or unknown."""
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 512:
            return None
        if self._keys is None:
            return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]
        for known, tenant in self._keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):  # constant time per candidate
                return tenant
        return None


def load_keys(path: Path | None = None, env_value: str | None = None) -> dict[str, str] | None:
    """Reads keys from a file and/or the environment value; ``None`` if neither gives any."""
    keys: dict[str, str] = {}
    if path is not None:
        text = Path(path).read_text()
        if text.lstrip().startswith("{"):
            keys.update({str(k): str(v) for k, v in json.loads(text).items()})
        else:
            for number, line in enumerate(text.splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.split()
                if len(parts) != 2:
                    raise ValueError(f"{path}:{number}: expected '<tml-key> <tenant>', got {line!r}")
                keys[parts[0]] = parts[1]
    if env_value:
        for item in env_value.split(","):
            if not item.strip():
                continue
            key, sep, tenant = item.strip().partition("=")
            if not sep:
                raise ValueError(f"{KEYS_ENV}: expected 'tml-key=tenant' items, got {item!r}")
            keys[key] = tenant
    for key, tenant in keys.items():
        _check(key, tenant)
    return keys or None


def is_tenant_name(name: str) -> bool:
    """Whether ``name`` can be a tenant (and so a directory name under the checkpoint root)."""
    return bool(_TENANT.match(name))


def _check(key: str, tenant: str) -> None:
    if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + 8:
        raise ValueError(f"API keys must start with {KEY_PREFIX!r} (the SDK rejects others) and be at least "
                         "12 characters")
    if not _TENANT.match(tenant):
        raise ValueError(f"tenant name {tenant!r}: use letters, digits, '_', '.', '-' (at most 64)")
