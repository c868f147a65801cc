"""A TCP server that answers each HTTP request with canned bytes: what a real backend would rarely send
(chunked bodies, interim answers, a connection dropped while idle or mid-body), for the router's client."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

Reply = Callable[[bytes], "bytes | None"]
"""The answer to a request head; None closes the connection without answering."""


def answer(status: str = "200 OK", body: bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    """A complete HTTP/1.1 answer with a Content-Length."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class RawBackend:
    """Listens on 127.0.0.1; each request head is noted in ``heads`` and answered by ``reply``; after
    ``close_after`` answers on one connection (None: never), that connection is closed."""

    def __init__(self, reply: Reply, close_after: int | None = None) -> None:
        self.reply, self.close_after = reply, close_after
        self.heads: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, name="raw-backend", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        buffer, answered = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(65536)
                    except ConnectionResetError:  # the client dropped a connection with an answer unread
                        return
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                self.heads.append(head)
                out = self.reply(head)
                if out is None:
                    return
                try:
                    conn.sendall(out)
                except (BrokenPipeError, ConnectionResetError):  # the client hung up mid-answer (a stream abandoned early)
                    return
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    return

    def close(self) -> None:
        """Stop listening: connecting is refused from now on."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone would leave it listening)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(timeout=5)


def header_names(head: bytes) -> list[str]:
    """The lower-cased header names of a request head."""
    return [line.split(b":", 1)[0].decode().lower() for line in head.split(b"\r\n")[1:]]
