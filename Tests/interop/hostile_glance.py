"""A Glance that answers as an attacker would, on 127.0.0.1, for the tests of Berth's Glance client.

Speaks just enough of Glance v2 (`GET /v2/images/<id>`, `GET /v2/images/<id>/file`) to drive `berth images
show|verify --catalog glance:URL`. What it answers is chosen per server (`HostileGlance.answer`); every
request it sees is recorded with its headers, so a test can tell whether a token reached it.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

IMAGE_ID = "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90"
GIB = 1 << 30
MIB = 1 << 20
CHUNK = b"a" * MIB


def image_record(data: bytes, *, size: int | None = None, disk_format: str = "raw") -> dict:
    """An active image record of `data` as Glance 33 writes it (`size` may lie)."""
    return {
        "id": IMAGE_ID, "name": "hostile", "status": "active", "disk_format": disk_format,
        "container_format": "bare", "size": len(data) if size is None else size, "virtual_size": None,
        "checksum": hashlib.md5(data).hexdigest(), "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(data).hexdigest(), "min_disk": 0, "min_ram": 0,
        "created_at": "2026-12-04T02:38:09Z", "updated_at": "2026-12-04T02:38:18Z", "visibility": "shared",
        "protected": False, "tags": [], "self": f"/v2/images/{IMAGE_ID}",
        "file": f"/v2/images/{IMAGE_ID}/file", "schema": "/v2/schemas/image",
    }


class Answer:
    """What the server sends for one path: a status, headers and a body of `length` bytes made by `chunks`."""

    def __init__(self, status: int = 200, body: bytes = b"", *, headers: dict | None = None,
                 stream: tuple[bytes, int, bytes] | None = None, declare_length: bool = True):
        self.status, self.body, self.headers = status, body, headers or {}
        # (prefix, bytes of filler, suffix): a body too large to hold, generated while sending.
        self.stream, self.declare_length = stream, declare_length

    def send(self, handler: http.server.BaseHTTPRequestHandler):
        handler.send_response(self.status)
        for key, value in self.headers.items():
            handler.send_header(key, value)
        if self.stream is None:
            handler.send_header("Content-Length", str(len(self.body)))
            handler.end_headers()
            handler.wfile.write(self.body)
            return
        prefix, filler, suffix = self.stream
        length = len(prefix) + filler + len(suffix)
        if self.declare_length:
            handler.send_header("Content-Length", str(length))
        else:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def write(part: bytes):
            if self.declare_length:
                handler.wfile.write(part)
            elif part:  # an empty chunk would end the body
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))

        try:
            write(prefix)
            sent = 0
            while sent < filler:
                part = CHUNK[: min(len(CHUNK), filler - sent)]
                write(part)
                sent += len(part)
            write(suffix)
            if not self.declare_length:
                handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            handler.server.stopped_early = True  # the client stopped reading: what a bounded client does


class HostileGlance:
    """A threaded HTTP server on a free loopback port; `answers` maps a path to its `Answer`."""

    def __init__(self):
        self.answers: dict[str, Answer] = {}
        self.requests: list[tuple[str, dict]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                answer = owner.answers.get(self.path.split("?")[0])
                if answer is None:
                    answer = Answer(404, json.dumps({"message": "not found"}).encode(),
                                    headers={"Content-Type": "application/json"})
                answer.send(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.stopped_early = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def stopped_early(self) -> bool:
        return self.server.stopped_early

    def close(self):
        self.server.shutdown()
        self.server.server_close()
