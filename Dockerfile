# One image for every role; the command picks it (see docker-compose.yml):
#   bridge:  mcp-celery-bridge serve --host 0.0.0.0 --port 8000
#   worker:  celery -A mcp_celery_bridge.workers worker -P prefork -c 2 -E -l info
#   Flower:  celery -A mcp_celery_bridge.workers flower --address=0.0.0.0 --port=5555
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# Dependencies first, in a layer of their own: a change to the code reinstalls only the
# project itself. (Empty packages stand in for the code while they install.)
COPY pyproject.toml README.md ./
RUN mkdir mcp_celery_bridge && touch mcp_celery_bridge/__init__.py \
    && pip install --no-cache-dir '.[flower]' && pip uninstall -y -q mcp-celery-bridge \
    && rm -r mcp_celery_bridge
# mcp_celery_bridge/ holds symlinks to bridge/ and workers/ (the installed package has the
# files): the three together.
COPY mcp_celery_bridge ./mcp_celery_bridge
COPY bridge ./bridge
COPY workers ./workers
# The flower extra, so the same image runs Flower.
RUN pip install --no-cache-dir --no-deps '.[flower]'
# Your own tool modules: mount or copy them into /app/tools (see docker-compose.yml).
ENV PYTHONPATH=/app/tools
# Celery refuses nothing as root with the json serializer, but run as a user anyway.
RUN useradd --create-home mcp
USER mcp
EXPOSE 8000 5555
CMD ["mcp-celery-bridge", "serve", "--host", "0.0.0.0", "--port", "8000"]
