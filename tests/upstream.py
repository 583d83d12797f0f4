"""A real HTTP server on 127.0.0.1 for tests: it answers, fails, delays, hangs and trickles.

Paths choose the behaviour, so one server serves a whole test module:

    /ok                      200 {"ok": true}
    /status/503?retry_after=1  that status (with Retry-After when given)
    /delay/1.5               200 after 1.5 s
    /hang                    held until the test calls ``release()`` (or 30 s pass)
    /trickle?every=0.2&n=20  200 whose body arrives one byte every 0.2 s
    /chunked?every=0.1&n=50  200, chunked, whose first chunk-size line trickles in byte by byte
    /head?every=0.1&n=100    its status line and headers one byte every 0.1 s (n bytes of headers)
    /gzip?every=0.05&n=200   200, gzip, whose body is n empty deflate blocks, one every 0.05 s
    /close?every=0.1&n=50    200 with no length (the body ends when the connection closes),
                             one byte every 0.1 s
    /script                  the next answer from ``script([...])``: status codes or "hang"
    /echo                    200 with the request's method, headers and body
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MAX_HOLD = 30.0


class Upstream:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._script: list = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "Upstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        """Let every held request go."""
        self._released.set()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._script = []
        self._released = threading.Event()

    def script(self, answers: list) -> None:
        """The answers of ``/script``, in order; after the last, 200."""
        with self._lock:
            self._script = list(answers)

    def count(self, path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].startswith(path_prefix))

    def _next_scripted(self):
        with self._lock:
            return self._script.pop(0) if self._script else 200

    def _handler(self):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 64 * 1024  # one write per answer: no Nagle/delayed-ACK stall on keep-alive

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def _serve(self) -> None:
                parsed = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with upstream._lock:
                    upstream.requests.append(
                        {
                            "method": self.command,
                            "path": parsed.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "at": time.monotonic(),
                        }
                    )
                parts = parsed.path.strip("/").split("/")
                kind = parts[0]
                try:
                    if kind == "ok":
                        self._send(200, {"ok": True})
                    elif kind == "status":
                        extra = (
                            {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
                        )
                        self._send(int(parts[1]), {"status": int(parts[1])}, extra)
                    elif kind == "delay":
                        time.sleep(float(parts[1]))
                        self._send(200, {"delayed": float(parts[1])})
                    elif kind == "hang":
                        upstream._released.wait(MAX_HOLD)
                        self._send(200, {"released": True})
                    elif kind == "trickle":
                        self._trickle(float(query.get("every", 0.2)), int(query.get("n", 20)))
                    elif kind == "chunked":
                        self._chunked(float(query.get("every", 0.1)), int(query.get("n", 50)))
                    elif kind == "head":
                        self._head(float(query.get("every", 0.1)), int(query.get("n", 100)))
                    elif kind == "gzip":
                        self._gzip(float(query.get("every", 0.05)), int(query.get("n", 200)))
                    elif kind == "close":
                        self._close(float(query.get("every", 0.1)), int(query.get("n", 50)))
                    elif kind == "script":
                        answer = upstream._next_scripted()
                        if answer == "hang":
                            upstream._released.wait(MAX_HOLD)
                            answer = 200
                        self._send(int(answer), {"status": int(answer)})
                    elif kind == "echo":
                        self._send(
                            200,
                            {
                                "method": self.command,
                                "headers": dict(self.headers),
                                "body": body.decode(),
                            },
                        )
                    else:
                        self._send(404, {"code": "not_found"})
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _trickle(self, every: float, n: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(n))
                self.end_headers()
                self.wfile.flush()
                for _ in range(n):
                    time.sleep(every)
                    self.wfile.write(b"x")
                    self.wfile.flush()

            def _chunked(self, every: float, n: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"1;")  # a chunk extension: http.client reads the line to its end
                self.wfile.flush()
                for _ in range(n):
                    time.sleep(every)
                    self.wfile.write(b"a")
                    self.wfile.flush()
                self.wfile.write(b"\r\nx\r\n0\r\n\r\n")
                self.wfile.flush()

            def _drip(self, data: bytes, every: float) -> None:
                for byte in data:
                    time.sleep(every)
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()

            def _head(self, every: float, n: int) -> None:
                pad = "x" * max(1, n - 40)
                head = f"HTTP/1.1 200 OK\r\nX-Pad: {pad}\r\nContent-Length: 2\r\n\r\n"
                self._drip(head.encode(), every)
                self.wfile.write(b"{}")
                self.wfile.flush()

            def _gzip(self, every: float, n: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(10 + 5 * n))
                self.end_headers()
                self.wfile.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # gzip header
                self.wfile.flush()
                for _ in range(n):  # a stored block of no bytes, not the last: decodes to nothing
                    time.sleep(every)
                    self.wfile.write(b"\x00\x00\x00\xff\xff")
                    self.wfile.flush()

            def _close(self, every: float, n: int) -> None:
                self.close_connection = True
                self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                self.wfile.flush()
                self._drip(b"x" * n, every)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler
