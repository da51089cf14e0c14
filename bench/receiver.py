"""A loopback receiver of job callbacks that records, per job, every
delivery id it was sent: at-least-once delivery may repeat a POST, but
every POST for one job must carry the same delivery id."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class DeliveryReceiver:
    def __init__(self) -> None:
        self.deliveries: dict[str, list[str]] = defaultdict(list)  # job id -> delivery ids, in arrival order
        self.statuses: dict[str, list[str]] = defaultdict(list)  # job id -> the status in each POST
        self.bad: list[str] = []  # bodies that were not a job's callback
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw)
                    job_id = str(body["job_id"])
                    delivery = str(body.get("delivery_id") or self.headers.get("x-whisper-mcp-delivery"))
                    with lock:
                        receiver.deliveries[job_id].append(delivery)
                        receiver.statuses[job_id].append(str(body.get("status")))
                except (ValueError, KeyError, TypeError):
                    with lock:
                        receiver.bad.append(raw[:200].decode(errors="replace"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/done"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
