"""mcp-celery-bridge: the HTTP/MCP side, ``mcp_celery_bridge.bridge``."""

from mcp_celery_bridge.bridge.shared.settings import Settings

__version__ = "0.1.0"
__all__ = ["Settings", "__version__"]
