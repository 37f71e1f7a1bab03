"""Stand-ins for the Elastic images, which Debian does not package.

logsink: what the services see of Logstash: UDP and TCP 5959 accept JSON log lines
(shipped by python-logstash) and print them, so `docker-compose logs logstash` shows them.
health: an HTTP 200 on every path (Elasticsearch's place in the start order).
No indexing, no search: Kibana is left out of the local stack.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import sys
import threading

PORT = 5959
MAX_DATAGRAM = 65535  # one UDP datagram at most; python-logstash sends one record per datagram
MAX_LINE = 1 << 20  # a TCP log line longer than this is cut: a sender cannot grow our memory


class Lines(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while line := self.rfile.readline(MAX_LINE):
            sys.stdout.write(line.decode(errors="replace").rstrip("\n") + "\n")


def logsink() -> None:
    tcp = socketserver.ThreadingTCPServer(("0.0.0.0", PORT), Lines)
    tcp.daemon_threads = True
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", PORT))
    while True:
        data, _ = udp.recvfrom(MAX_DATAGRAM)
        sys.stdout.write(data.decode(errors="replace").rstrip("\n") + "\n")
        sys.stdout.flush()


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status":"green"}')


def health(port: int) -> None:
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Ok).serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["health"]:
        health(int(sys.argv[2]) if len(sys.argv) > 2 else 9200)
    else:
        logsink()
