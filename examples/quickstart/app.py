#!/usr/bin/env python3
"""A sample service for the quick start.

`app.py NAME PORT [UPSTREAM_URL]` serves GET / with a line naming itself;
when UPSTREAM_URL is given it calls it first and adds the answer, so a
request to `web` shows the hop to `backend` through both sidecars.
"""
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT = sys.argv[1], int(sys.argv[2])
UPSTREAM = sys.argv[3] if len(sys.argv) > 3 else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"{NAME}: hello\n"
        if UPSTREAM:
            try:
                with urllib.request.urlopen(UPSTREAM, timeout=5) as resp:
                    body += f"{NAME} -> {UPSTREAM} ({resp.status}): {resp.read().decode()}"
            except Exception as e:  # show the failure rather than hide it
                body += f"{NAME} -> {UPSTREAM} failed: {e}\n"
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
