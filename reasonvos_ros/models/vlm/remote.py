"""The VLM behind any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp, ``transformers serve``).

``OpenAIChatClient.chat(parts)`` has the same contract as ``QwenImageChat.chat``: text strings and ``ChatImage`` s
in, the answer and the size each image was seen at out. Images travel as ``image_url`` parts with
``data:image/jpeg;base64`` URLs (the OpenAI vision message format that these servers accept). Each image is
resized *here* to its family's ``smart_resize`` size (sides multiples of 28 for Qwen2.5-VL, 32 for Qwen3-VL) before
encoding, so a server running the stock Qwen processor leaves it unchanged and a Qwen2.5-VL answer in absolute
pixels refers to exactly the size sent (a server configured with a ``max_pixels`` below the sent size would
rescale it again: keep the server's limit at or above ``key_max_pixels``).

Failures never stall the caller: every attempt has a deadline (``timeout_s`` for connecting, sending and reading
the whole reply; the body is read in chunks and the deadline checked between them), connection errors, timeouts
and HTTP 5xx / 429 are retried ``retries`` times with a short back-off, HTTP 4xx and malformed replies are not
retried; what is left raises ``BackendFailure`` naming the server and the cause. Nothing but the configured URL
is contacted; only the standard library is used (no new dependency).
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ...core.errors import BackendFailure, ConfigError
from .chat import DEFAULT_SYSTEM_PROMPT, SUPPORTED_FAMILIES, ChatImage, ChatReply, check_image, seen_size

RETRIED_HTTP_CODES = (429, 500, 502, 503, 504)


def encode_jpeg_data_url(image: np.ndarray, quality: int = 90) -> str:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BackendFailure("JPEG encoding of a frame failed")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def resize_to(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size_wh:
        return image
    shrinking = size_wh[0] * size_wh[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


class OpenAIChatClient:
    """Chat completions over HTTP; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        model: str,
        family: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 1,
        retry_backoff_s: float = 0.5,
        max_new_tokens: int = 192,
        jpeg_quality: int = 90,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        parsed = urllib.parse.urlparse(str(base_url))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"server_url must be an http(s) URL such as http://host:8000/v1, got {base_url!r}")
        if family not in SUPPORTED_FAMILIES:
            raise ConfigError(
                f"the served VLM's family must be one of {', '.join(SUPPORTED_FAMILIES)} (it fixes the coordinate "
                f"convention), got {family!r}"
            )
        if not model:
            raise ConfigError(
                "server_model must name the model as the server knows it (e.g. Qwen/Qwen3-VL-8B-Instruct)"
            )
        if not 0 < float(timeout_s) <= 3600 or int(retries) < 0 or not 10 <= int(jpeg_quality) <= 100:
            raise ConfigError(
                f"bad server options: timeout_s {timeout_s} (0..3600], retries {retries} (>= 0), "
                f"jpeg_quality {jpeg_quality} (10..100)"
            )
        self.url = str(base_url).rstrip("/") + "/chat/completions"
        self.model = str(model)
        self.family = family
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.retry_backoff_s = float(retry_backoff_s)
        self.max_new_tokens = int(max_new_tokens)
        self.jpeg_quality = int(jpeg_quality)
        self.system_prompt = system_prompt

    def build_request(self, parts: Sequence[str | ChatImage]) -> tuple[dict[str, Any], list[tuple[int, int]]]:
        content: list[dict[str, Any]] = []
        sizes = []
        for part in parts:
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
                continue
            image = check_image(part.image)
            size = seen_size(image.shape, self.family, part.max_pixels, part.min_pixels)
            sizes.append(size)
            url = encode_jpeg_data_url(resize_to(image, size), self.jpeg_quality)
            content.append({"type": "image_url", "image_url": {"url": url}})
        messages = [{"role": "user", "content": content}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_new_tokens, "temperature": 0.0}
        return body, sizes

    def _post_once(self, data: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            chunks = []
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reply not complete after {self.timeout_s:g} s")
                chunk = response.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return json.loads(b"".join(chunks))

    def chat(self, parts: Sequence[str | ChatImage]) -> ChatReply:
        started = time.perf_counter()
        body, sizes = self.build_request(parts)
        data = json.dumps(body).encode("utf-8")
        stats: dict[str, Any] = {"request_bytes": len(data), "encode_s": time.perf_counter() - started}
        problems = []
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_backoff_s * attempt)
            start = time.perf_counter()
            try:
                reply = self._post_once(data)
            except urllib.error.HTTPError as exc:
                detail = exc.read(300).decode("utf-8", "replace") if exc.fp else ""
                problems.append(f"HTTP {exc.code} {exc.reason}: {detail}".strip())
                if exc.code in RETRIED_HTTP_CODES:
                    continue
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                problems.append(f"{type(reason).__name__}: {reason}")
                continue
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problems.append(f"reply is not JSON: {exc}")
                break
            stats["server_s"] = time.perf_counter() - start
            stats["attempts"] = attempt + 1
            try:
                text = reply["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                problems.append(f"reply lacks choices[0].message.content: {str(reply)[:200]}")
                break
            if isinstance(text, list):  # some servers return content parts
                text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
            if not isinstance(text, str):
                problems.append("choices[0].message.content is not text")
                break
            usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
            stats["prompt_tokens"] = usage.get("prompt_tokens")
            stats["new_tokens"] = usage.get("completion_tokens")
            stats["total_s"] = time.perf_counter() - started
            return ChatReply(text=text.strip(), seen_sizes=sizes, stats=stats)
        raise BackendFailure(
            f"VLM server {self.url} failed after {len(problems)} attempt(s): " + " | ".join(problems)[:600]
        )
