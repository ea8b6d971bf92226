"""A minimal OpenAI-compatible chat-completions server around ``QwenImageChat`` (tests, benchmarks, a quick LAN
set-up). For a fleet, serve the model with vLLM or SGLang instead: they batch requests and are much faster.

``python -m reasonvos_ros.models.vlm.chat_server --model-dir DIR [--host 127.0.0.1] [--port 0]`` prints
``listening on http://HOST:PORT/v1`` once ready. Endpoints: ``POST /v1/chat/completions`` (text and ``image_url``
parts; only ``data:`` URLs are accepted -- the server never fetches anything), ``GET /v1/models``, ``GET /health``.
Requests are served one at a time (one model). Images are used at the size they arrive in, up to
``--max-pixels`` (like a stock Qwen processor: the client sends them already at a ``smart_resize`` size).
Fault injection for tests: ``--fail-first N`` answers the first N chat requests with HTTP 503, ``--delay-s`` sleeps
before every answer. ``--force-answer TEXT`` (tests with tiny random models, whose own answers are noise) constrains
the model's decoding to TEXT (``tiny.force_answer``): the prompt, vision encoder and decoding still run.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

MAX_BODY_BYTES = 64 * 1024 * 1024


def decode_data_url(url: str) -> np.ndarray:
    if not isinstance(url, str) or not url.startswith("data:image/") or ";base64," not in url:
        raise ValueError("only data:image/...;base64 URLs are accepted")
    raw = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("the image data cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def messages_to_parts(messages: Any, max_pixels: int) -> tuple[str | None, list]:
    """OpenAI messages -> (system prompt, user parts for ``QwenImageChat``). One user turn is supported."""
    from .chat import ChatImage

    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    system = None
    parts: list = []
    users = 0
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role == "system":
            system = (
                content
                if isinstance(content, str)
                else "".join(c.get("text", "") for c in content or [] if isinstance(c, dict))
            )
        elif role == "user":
            users += 1
            if isinstance(content, str):
                parts.append(content)
                continue
            for item in content or []:
                kind = item.get("type") if isinstance(item, dict) else None
                if kind == "text":
                    parts.append(str(item.get("text", "")))
                elif kind == "image_url":
                    url = item.get("image_url", {})
                    image = decode_data_url(url.get("url") if isinstance(url, dict) else url)
                    parts.append(ChatImage(image, max_pixels=max(max_pixels, 1), min_pixels=1))
                else:
                    raise ValueError(f"unsupported content part {kind!r}")
        else:
            raise ValueError(f"unsupported role {role!r} (this server takes one system and one user message)")
    if users != 1:
        raise ValueError(f"exactly one user message is supported, got {users}")
    return system, parts


def make_handler(chat, model_name: str, max_pixels: int, fail_first: int, delay_s: float):
    lock = threading.Lock()
    counter = {"chat_requests": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            elif self.path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY_BYTES:
                self._send(413 if length else 411, {"error": {"message": f"bad body length {length}"}})
                return
            raw = self.rfile.read(length)
            with lock:
                counter["chat_requests"] += 1
                number = counter["chat_requests"]
            if number <= fail_first:
                self._send(503, {"error": {"message": f"injected failure {number}/{fail_first}"}})
                return
            try:
                body = json.loads(raw)
                system, parts = messages_to_parts(body.get("messages"), max_pixels)
                max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 192)
            except (ValueError, TypeError, AttributeError) as exc:
                self._send(400, {"error": {"message": f"bad request: {exc}"}})
                return
            if delay_s:
                time.sleep(delay_s)
            try:
                with lock:
                    if system is not None:
                        chat.system_prompt = system
                    chat.max_new_tokens = max(16, min(max_tokens, 4096))
                    reply = chat.chat(parts)
            except Exception as exc:
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
                return
            self._send(
                200,
                {
                    "id": f"chatcmpl-{number}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model_name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": reply.stats.get("prompt_tokens"),
                        "completion_tokens": reply.stats.get("new_tokens"),
                    },
                },
            )

    return Handler


def start_server_process(model_dir, *extra: str, startup_timeout_s: float = 120.0):
    """Start this server in a child process on a free port (CPU, one thread) and wait until it listens.

    Returns ``(process, base_url)``; stop it with :func:`stop_server_process`. For tests and benchmarks."""
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "reasonvos_ros.models.vlm.chat_server", "--model-dir", str(model_dir)]
    command += ["--port", "0", "--device", "cpu", "--threads", "1", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("listening on "):
            return process, line.split()[-1]
        if not line and process.poll() is not None:
            break
    stop_server_process(process, timeout_s=0)
    raise RuntimeError(f"the chat server for {model_dir} did not start")


def stop_server_process(process, timeout_s: float = 10.0) -> None:
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--model-name", default=None, help="name reported in /v1/models (default: the directory name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-pixels", type=int, default=1280 * 28 * 28)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--force-answer", default=None, help="tests only: constrain decoding to this text")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from .chat import QwenImageChat

    chat = QwenImageChat(args.model_dir, device=args.device, dtype=args.dtype)
    if args.force_answer is not None:
        from .tiny import force_answer

        force_answer(chat, args.force_answer)
    name = args.model_name or chat.model_dir.name
    server = ThreadingHTTPServer(
        (args.host, args.port), make_handler(chat, name, args.max_pixels, args.fail_first, args.delay_s)
    )
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
