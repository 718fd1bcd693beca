"""The training server: the engine behind the Tinker HTTP API, for the unmodified ``tinker`` SDK."""

from .app import create_app
from .config import ServerConfig
from .server import build_service, serve
from .service import TinkerService

__all__ = ["ServerConfig", "TinkerService", "build_service", "create_app", "serve"]
