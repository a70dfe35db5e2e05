"""An identity provider's JWKS endpoint for the tests: it publishes an RSA key, counts its
fetches, and can be held (a slow provider)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class Provider(BaseHTTPRequestHandler):
    body = b""
    fetches = 0
    #: Cleared, fetches wait (up to 30 s) until it is set again.
    open = threading.Event()

    def do_GET(self) -> None:
        type(self).fetches += 1
        self.open.wait(30)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def publishing(key: rsa.RSAPrivateKey, **jwk_fields: str) -> Iterator[str]:
    """The URL of a JWKS holding ``key``'s public half (with ``jwk_fields``, a ``kid`` at
    least) while the block runs."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    Provider.body = json.dumps({"keys": [{**jwk, "use": "sig", **jwk_fields}]}).encode()
    Provider.open.set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        Provider.open.set()
        server.shutdown()
