"""A local HTTP server standing in for Slack's incoming webhook, recording what it received."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "XyZsecretWebhookToken42"


class SlackStub:
    """A local stand-in for a Slack webhook: records every JSON body; answers ``status`` after ``delay``."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        self.raw: list[str] = []    # the bodies as sent
        self.paths: list[str] = []  # the request paths (the webhook's own, secret, path)
        self.status, self.delay = status, delay
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                stub.paths.append(self.path)
                stub.raw.append(body)
                stub.received.append(json.loads(body))
                if stub.delay:
                    time.sleep(stub.delay)
                try:
                    self.send_response(stub.status)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/services/T0AAA/B0BBB/{TOKEN}"

    def texts(self) -> list[str]:
        return [m["text"] for m in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


