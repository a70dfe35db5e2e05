FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY workers ./workers
RUN pip install --no-cache-dir '.[flower]'
# Celery refuses nothing as root with the json serializer, but run as a user anyway.
RUN useradd --create-home mcp
USER mcp
EXPOSE 8000
CMD ["mcp-celery-bridge", "serve", "--host", "0.0.0.0", "--port", "8000"]
