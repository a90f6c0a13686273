"""LLM judges over any OpenAI-compatible chat-completions server (vLLM, TGI, `mirage-serve`, OpenAI).

Same prompts and parsers as the in-process judges of :mod:`mirage.evaluation.judges.llm`; only the
transport differs. Standard library only. The API key is read from an environment variable at
request time, so it is never stored on the judge, logged, or part of the cache key.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mirage.evaluation.judges.base import Judge, JudgeInput
from mirage.evaluation.judges.llm import LLMHarmJudge, LLMJudge, LLMRelevanceJudge
from mirage.evaluation.judges.misalignment import LLMMisalignmentJudge

log = logging.getLogger(__name__)

KINDS: dict[str, type[LLMJudge]] = {
    "relevance": LLMRelevanceJudge,
    "harm": LLMHarmJudge,
    "misalignment": LLMMisalignmentJudge,  # 0-100 vs the base model's answer (reference section 8)
}
# Worth retrying: rate limits and overloaded or restarting servers.
_RETRY_STATUS = {429, 500, 502, 503, 504}


class JudgeServerError(RuntimeError):
    """The judge server could not be reached or answered something unusable."""


def image_data_url(path: str | Path) -> str:
    """The file's bytes, unchanged, as a base64 data URL (no re-encoding, so pixels match exactly)."""
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


class OpenAICompatibleJudge(Judge):
    """Relevance, harm or misalignment (``kind``) judging via ``{base_url}/chat/completions``.

    ``base_url`` includes the API version, e.g. ``http://127.0.0.1:8000/v1``. Requests use
    temperature 0 and ``max_tokens``; the image, when ``use_image`` is set and the input has one,
    is sent as an ``image_url`` content part holding a base64 data URL, before the text part.
    Up to ``concurrency`` requests run at once. A refused connection fails at once with an error
    naming the URL; HTTP 429/5xx are retried ``retries`` times with backoff.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        kind: str = "relevance",
        prompt: str | None = None,
        max_tokens: int = 64,
        use_image: bool = True,
        system_prompt: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        batch_size: int = 16,
        timeout: float = 120.0,
        retries: int = 2,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown judge kind {kind!r}; use one of {sorted(KINDS)}")
        # The in-process judge class supplies the template and the parser; it never loads a model here.
        self.task = KINDS[kind](prompt=prompt, use_image=use_image, system_prompt=system_prompt)
        self.kind = kind
        self.name = f"openai_{kind}"
        self.decides = self.task.decides
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.max_tokens = int(max_tokens)
        self.api_key_env = api_key_env
        self.concurrency = max(1, int(concurrency))
        self.batch_size = int(batch_size)
        self.timeout = float(timeout)
        self.retries = int(retries)

    @property
    def reads(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.task.reads

    def settings(self) -> dict[str, Any]:
        # Only what changes replies; the key (and its variable's name) stay out on purpose.
        return {
            "base_url": self.base_url,
            "model": self.model,
            "kind": self.kind,
            "prompt": self.task.prompt,
            "max_tokens": self.max_tokens,
            "use_image": self.task.use_image,
            "system_prompt": self.task.system_prompt,
            "temperature": 0,
        }

    def request_body(self, item: JudgeInput) -> dict[str, Any]:
        text = self.task.render(item)
        content: str | list[dict[str, Any]] = text
        if self.task.use_image and item.image is not None:
            content = [
                {"type": "image_url", "image_url": {"url": image_data_url(item.image)}},
                {"type": "text", "text": text},
            ]
        messages: list[dict[str, Any]] = []
        if self.task.system_prompt:
            messages.append({"role": "system", "content": self.task.system_prompt})
        messages.append({"role": "user", "content": content})
        return {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}

    def ask(self, item: JudgeInput) -> str:
        """One chat completion; the reply's text."""
        payload = json.dumps(self.request_body(item)).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(self.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    data = json.loads(response.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", "replace")[:500]
                if err.code in _RETRY_STATUS and attempt < self.retries:
                    log.warning("judge server %s answered HTTP %d; retrying", self.url, err.code)
                    time.sleep(2**attempt)
                    continue
                raise JudgeServerError(
                    f"judge server {self.url} answered HTTP {err.code}: {detail}"
                ) from None
            except TimeoutError as err:
                raise JudgeServerError(
                    f"judge server {self.url} did not answer within {self.timeout:g}s"
                ) from err
            except urllib.error.URLError as err:
                raise JudgeServerError(f"cannot reach judge server {self.url}: {err.reason}") from err
            except json.JSONDecodeError as err:
                raise JudgeServerError(f"judge server {self.url} answered with invalid JSON: {err}") from err
        return _reply_text(data, self.url)

    def judge_batch(self, items: list[JudgeInput]) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(items)))) as pool:
            replies = list(pool.map(self.ask, items))
        return [self.task.verdict(reply) for reply in replies]


def _reply_text(data: Any, url: str) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeServerError(f"judge server {url} answered without choices[0].message.content") from None
    if content is None:
        return ""
    if isinstance(content, list):  # some servers answer in content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)
