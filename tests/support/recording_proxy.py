"""A TCP proxy on 127.0.0.1 that records every byte a client sends through it.

The canary tests put it between the agent and the hub, so they can assert on the exact bytes
that left the agent, whatever the HTTP library did with them.
"""

from __future__ import annotations

import socket
import threading


class RecordingProxy:
    """Forward connections from a loopback port to ``target`` and keep the client's bytes."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "RecordingProxy":
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def client_bytes(self) -> bytes:
        with self._lock:
            return bytes(self.sent)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            upstream = socket.create_connection(self.target, timeout=10)
            for source, sink, record in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, sink, record), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        source.settimeout(0.5)
        try:
            while not self._stopping.is_set():
                try:
                    chunk = source.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                if record:
                    with self._lock:
                        self.sent.extend(chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            # Pass the end of the stream on, then release this direction's socket; each
            # socket is the source of exactly one pump, so each is closed exactly once.
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            source.close()
