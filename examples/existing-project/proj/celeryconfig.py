"""The project's Celery configuration. The one line for the bridge is ``imports``'s
``mcp_celery_bridge.workers.integration``: it lets these workers run the MCP calls of the
tasks below."""

import os

broker_url = os.environ.get("PROJ_BROKER_URL", "redis://127.0.0.1:6379/1")
result_backend = os.environ.get("PROJ_RESULT_BACKEND", "redis://127.0.0.1:6379/2")
task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"
broker_transport_options = {
    "visibility_timeout": 3600,
    # Several projects on one Redis keep their queues apart with a key prefix.
    "global_keyprefix": os.environ.get("PROJ_KEY_PREFIX", ""),
}
task_routes = {"proj.tasks.render_pdf": {"queue": os.environ.get("PROJ_PDF_QUEUE", "pdf")}}
imports = ["proj.tasks", "mcp_celery_bridge.workers.integration"]
