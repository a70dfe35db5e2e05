"""What the server says of itself in every era: its name and version, and its
instructions to clients. (The protocol versions belong to the era adapters that speak
them: ``bridge.eras``.)"""

from __future__ import annotations

from mcp_celery_bridge.bridge import __version__

SERVER_INFO = {"name": "mcp-celery-bridge", "version": __version__}
INSTRUCTIONS = (
    "Long-running tools run as tasks on Celery workers: create a task, then poll tasks/get "
    "(or listen for its notifications) until it is terminal."
)
