"""A small OpenAI-compatible chat-completions server for any model mirage can load.

``POST /v1/chat/completions`` and ``GET /v1/models``, standard library only. A conversation
becomes one :class:`Sample` (the last user message is the question; earlier user/assistant
pairs go to ``meta["history"]``; system messages become the system prompt) and is answered by
mirage's own ``generate_batch``, so a served model replies exactly as it does in-process.
Images must be ``data:`` URLs (one per conversation); their bytes are stored unchanged under a
temporary folder named by content hash, since mirage's collator reads images from paths.
Model calls are serialized with a lock: one request generates at a time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mirage.data.records import Sample

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_TOKENS = 256  # the paper's evaluation decoding length


class RequestError(ValueError):
    """A client mistake, answered with HTTP 400 and this message."""


class ChatModel:
    """A loaded (model, processor) that answers OpenAI-style chat requests."""

    def __init__(self, model: Any, processor: Any, name: str, image_dir: Path) -> None:
        self.model, self.processor, self.name = model, processor, name
        self.image_dir = image_dir
        self.lock = threading.Lock()

    def to_sample(self, messages: Any) -> tuple[Sample, str | None]:
        """The conversation as one sample, and the system prompt."""
        if not isinstance(messages, list) or not messages:
            raise RequestError("`messages` must be a non-empty list")
        system: list[str] = []
        turns: list[tuple[str, str]] = []  # (role, text)
        images: list[Path] = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
                raise RequestError(f"messages[{index}] needs a role of system, user or assistant")
            text, found = self._content(message.get("content"), index)
            if found and message["role"] != "user":
                raise RequestError(f"messages[{index}]: only user messages may hold images")
            images.extend(found)
            if message["role"] == "system":
                system.append(text)
            else:
                turns.append((message["role"], text))
        if not turns or turns[-1][0] != "user":
            raise RequestError("the last non-system message must come from the user")
        if len(images) > 1:
            raise RequestError(f"one image per conversation is supported, got {len(images)}")
        history = []
        for position in range(0, len(turns) - 1, 2):
            (role_q, question), (role_a, answer) = turns[position], turns[position + 1]
            if (role_q, role_a) != ("user", "assistant"):
                raise RequestError("user and assistant messages must alternate, starting with the user")
            history.append((question, answer))
        meta = {"history": history} if history else {}
        sample = Sample(id="request", question=turns[-1][1], answer=None, image=images[0] if images else None)
        sample.meta.update(meta)
        return sample, "\n".join(system) or None

    def _content(self, content: Any, index: int) -> tuple[str, list[Path]]:
        if isinstance(content, str):
            return content, []
        if not isinstance(content, list):
            raise RequestError(f"messages[{index}].content must be a string or a list of content parts")
        texts, images = [], []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                images.append(self._store_image(url, index))
            else:
                raise RequestError(f"messages[{index}]: unsupported content part type {kind!r}")
        return "\n".join(texts), images

    def _store_image(self, url: Any, index: int) -> Path:
        """Decode a data URL, check it is an image, and keep its bytes under a content-hash name."""
        from PIL import Image

        if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
            raise RequestError(f"messages[{index}]: images must be base64 data: URLs (no remote fetching)")
        try:
            raw = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
            with Image.open(io.BytesIO(raw)) as image:
                image.load()
                suffix = (image.format or "png").lower()
        except (binascii.Error, ValueError, OSError) as err:
            raise RequestError(f"messages[{index}]: cannot decode image: {err}") from None
        # Content-addressed: the collator caches images by path, so a path must never change content.
        path = self.image_dir / f"{hashlib.sha256(raw).hexdigest()}.{suffix}"
        if not path.exists():
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(raw)
            tmp.replace(path)
        return path

    def complete(self, body: Any) -> dict[str, Any]:
        """The chat-completion response for one request body."""
        from mirage.evaluation.generation import GenerationConfig, generate_batch

        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        if body.get("stream"):
            raise RequestError("streaming is not supported")
        if int(body.get("n", 1) or 1) != 1:
            raise RequestError("only n=1 is supported")
        sample, system_prompt = self.to_sample(body.get("messages"))
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens")) or DEFAULT_MAX_TOKENS
        temperature = (
            1.0 if body.get("temperature") is None else float(body["temperature"])
        )  # OpenAI's default
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError("`stop` must be a string or a list of strings")
        config = GenerationConfig(
            max_new_tokens=int(max_tokens),
            batch_size=1,
            stop_strings=stop,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            top_p=float(body.get("top_p", 1.0) or 1.0),
            system_prompt=system_prompt,
        )
        with self.lock:
            if config.do_sample and body.get("seed") is not None:
                import torch

                torch.manual_seed(int(body["seed"]))
            text = generate_batch(self.model, self.processor, [sample], config)[0]
            prompt_tokens = self._prompt_tokens(sample, system_prompt)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        completion_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    # Approximate: generation does not report why it stopped.
                    "finish_reason": "length" if completion_tokens >= config.max_new_tokens else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _prompt_tokens(self, sample: Sample, system_prompt: str | None) -> int:
        from mirage.data.collate import VLMCollator

        batch = VLMCollator(self.processor, system_prompt=system_prompt, train=False)([sample])
        return int(batch["attention_mask"].sum())


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": self.server.chat.name, "object": "model", "created": 0, "owned_by": "mirage"}
            self._send(HTTPStatus.OK, {"object": "list", "data": [model]})
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route GET {self.path}")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(HTTPStatus.NOT_FOUND, f"no route POST {self.path}")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would otherwise be parsed as the next request
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY_BYTES} bytes")
            return
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8"))
            self._send(HTTPStatus.OK, self.server.chat.complete(body))
        except (RequestError, json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
        except Exception as err:
            log.exception("generation failed")
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"generation failed: {err}", "server_error")

    def _error(self, status: HTTPStatus, message: str, kind: str = "invalid_request_error") -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": int(status)}})

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


class ChatServer(ThreadingHTTPServer):
    """The HTTP server; ``stop()`` shuts it down and removes its image folder."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], chat: ChatModel) -> None:
        super().__init__(address, _Handler)
        self.chat = chat

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def server_close(self) -> None:
        super().server_close()
        shutil.rmtree(self.chat.image_dir, ignore_errors=True)


def make_server(
    model: str | Path | tuple[Any, Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
) -> ChatServer:
    """A server (not yet serving) for a model path, or for an already loaded (model, processor) pair."""
    if isinstance(model, tuple):
        loaded, processor = model
        name = name or getattr(getattr(loaded, "config", None), "_name_or_path", None) or "mirage"
    else:
        import torch

        from mirage.models.loading import load_vlm

        loaded, processor = load_vlm(model, dtype=dtype)
        loaded = loaded.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        name = name or str(model)
    chat = ChatModel(loaded, processor, str(name), Path(tempfile.mkdtemp(prefix="mirage-serve-")))
    return ChatServer((host, port), chat)


def start_server(
    model: str | Path | tuple[Any, Any], host: str = "127.0.0.1", port: int = 0, name: str | None = None
) -> tuple[ChatServer, str]:
    """Serve in a background thread (port 0 picks a free port); returns ``(server, base_url)``."""
    server = make_server(model, host, port, name)
    threading.Thread(target=server.serve_forever, name="mirage-serve", daemon=True).start()
    return server, server.base_url


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """Serve until interrupted."""
    server = make_server(model_path, host, port, **kwargs)
    log.info("serving %s at %s", server.chat.name, server.base_url)
    print(f"mirage-serve: {server.chat.name} at {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
