"""What the bridge and the workers share: settings, the error hierarchy, log set-up, the
Redis key schema, the task schema and records, the Redis clients, the store interfaces and
their Redis implementation (the registry and its Lua scripts).

Nothing here imports the HTTP server (Starlette, uvicorn) or the Celery app, so a worker
process imports this package and ``workers`` alone (tests/test_packages.py holds it to that).
"""
