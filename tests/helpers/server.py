"""A real training server on loopback with the tiny random model, for the API tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

API_KEYS = {"alice": "tml-alice-key-0001", "bob": "tml-bob-key-00002"}  # tenant -> API key
CORPUS = [
    "select name from users where age > 30;",
    "the quick brown fox jumps over the lazy dog.",
    "count the rows in the orders table grouped by city.",
    "SELECT COUNT(*) FROM singer WHERE country = 'France';",
] * 4


@dataclass
class ApiServer:
    """A real uvicorn server on loopback with the tiny model; ``keys`` maps tenant -> API key."""

    url: str
    service: Any
    model_dir: Path
    keys: dict[str, str]

    def client(self, tenant: str = "alice"):
        import tinker

        return tinker.ServiceClient(base_url=self.url, api_key=self.keys[tenant])
