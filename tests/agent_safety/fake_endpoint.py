"""A fake OpenAI-compatible endpoint on 127.0.0.1 (`http.server` in a thread) that answers from a script,
so every fault a real endpoint shows can be produced on demand: HTTP errors with headers, malformed JSON,
empty `choices`, slow answers (client timeouts) and dropped connections."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence, Union


@dataclasses.dataclass(frozen=True)
class Reply:
    """One scripted answer. delay_s: wait before answering; drop: close the connection without answering."""

    status: int = 200
    body: bytes = b""
    headers: tuple = ()
    delay_s: float = 0.0
    drop: bool = False


def completion(text: str, finish_reason: str = "stop") -> Reply:
    body = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    return Reply(body=json.dumps(body).encode())


def error(status: int, message: str, code: str | None = None, headers: tuple = ()) -> Reply:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return Reply(status=status, body=json.dumps(body).encode(), headers=headers)


MALFORMED_JSON = Reply(body=b'{"id": "chatcmpl-fake", "choices": [')
EMPTY_CHOICES = Reply(body=json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
                                       "choices": []}).encode())
NOT_AN_OBJECT = Reply(body=b'"just a string"')
DROP = Reply(drop=True)

Script = Union[Sequence[Reply], Callable[[dict], Reply]]


class FakeEndpoint:
    """`with FakeEndpoint(script) as endpoint:` serves http://127.0.0.1:PORT/v1. script: replies in order
    (a 500 once they run out) or a function of the request's JSON body. `requests`: the bodies received."""

    def __init__(self, script: Script):
        self._script = script if callable(script) else list(script)
        self._lock = threading.Lock()
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"

    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            if callable(self._script):
                return self._script(body)
            return self._script.pop(0) if self._script else error(500, "fake endpoint: script exhausted")

    def _handler_class(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                reply = endpoint._next_reply(body)
                time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    return
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args):
                pass

        return Handler

    def __enter__(self) -> "FakeEndpoint":
        threading.Thread(target=self._server.serve_forever, args=(0.01,), name="fake-endpoint", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
