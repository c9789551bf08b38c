"""The farm's one client of an OpenAI-compatible chat model (OpenAI, vLLM, Ollama, LM Studio).

Owns: the connection settings (``AIConfig``), the vision input (a screenshot downscaled to
``image_width`` and sent as a JPEG data URL), tool calling (parsed into ``ToolCall``), our own
retry with back-off (the ``openai`` client's retries are off so that back-off goes through the
injected ``sleep`` and every attempt is counted), and a token/cost counter per call and in total.
Recovery, discovery and the ``ai.*`` sequence variables all go through ``AIClient.chat``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import cv2
import numpy as np

from protocol.errors import FarmError

log = logging.getLogger(__name__)

# Back-off before attempt n+1 (seconds): BACKOFF_BASE_S * 2**n, at most BACKOFF_MAX_S.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
JPEG_QUALITY = 80


@dataclass(frozen=True)
class AIConfig:
    """Where the model lives and how to talk to it; prices are per million tokens."""

    base_url: str
    model: str
    api_key: str = field(default="none", repr=False)  # a secret: never in logs or reprs
    timeout_s: float = 30
    max_retries: int = 3
    image_width: int = 540
    price_prompt_per_mtok: float = 0.0
    price_completion_per_mtok: float = 0.0
    # Requests in flight at once (a scheduled burst resolves ${ai.*} texts for hundreds of
    # phones together; an endpoint's rate limit would answer most of them 429).
    max_concurrent: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "AIConfig | None":
        """The config from PHONEFARM_AI_BASE_URL, _MODEL, _KEY (None when no base URL is set)."""
        base_url = env.get("PHONEFARM_AI_BASE_URL", "").strip()
        if not base_url:
            return None
        return cls(base_url=base_url, model=env.get("PHONEFARM_AI_MODEL", "").strip() or "default",
                   api_key=env.get("PHONEFARM_AI_KEY", "").strip() or "none")


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict


@dataclass
class AIUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def add(self, other: "AIUsage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost


@dataclass
class AIReply:
    text: str
    tool_calls: list[ToolCall]
    usage: AIUsage
    attempts: int


class AIError(FarmError):
    """The model could not give a usable answer after the retries; ``reason`` names the cause
    (``http 500``, ``bad tool call JSON``, ``timeout``, ...)."""

    def __init__(self, reason: str, attempts: int = 1) -> None:
        self.reason = reason
        self.attempts = attempts
        super().__init__(f"AI model: {reason} (after {attempts} attempt(s))")


class _Retryable(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def image_data_url(png: bytes, width: int) -> str:
    """The screenshot ``png`` scaled down to ``width`` pixels wide (never up), as a JPEG data URL."""
    frame = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise FarmError("AI image input: the screenshot is not a decodable image")
    h, w = frame.shape[:2]
    if w > width:
        frame = cv2.resize(frame, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise FarmError("AI image input: JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _openai_client(config: AIConfig) -> Any:
    """An openai.AsyncOpenAI for ``config``, with the library's own retries off."""
    import openai

    return openai.AsyncOpenAI(base_url=config.base_url, api_key=config.api_key,
                              timeout=config.timeout_s, max_retries=0)


class AIClient:
    """One OpenAI-compatible chat endpoint with retries and a usage counter (``totals``)."""

    def __init__(self, config: AIConfig, *,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.config = config
        self._sleep = sleep
        # Made at the first call, in a thread: importing openai costs ~1-2 s of CPU, which
        # neither every coordinator start nor the event loop (every API request waited
        # behind it) should pay.
        self._client: Any = None
        self._making = asyncio.Lock()
        self.totals = AIUsage()
        self.calls = 0
        self._slots = asyncio.Semaphore(max(1, config.max_concurrent))

    async def _openai(self) -> Any:
        async with self._making:
            if self._client is None:
                self._client = await asyncio.to_thread(_openai_client, self.config)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.config.price_prompt_per_mtok
                + completion_tokens * self.config.price_completion_per_mtok) / 1_000_000

    async def chat(self, system: str, user: str, *, image_png: bytes | None = None,
                   tools: list[dict] | None = None, tool_choice: str = "auto") -> AIReply:
        """One question to the model; retries server errors, timeouts, lost connections and
        malformed tool-call JSON with back-off; raises AIError naming the last cause."""
        content: Any = user
        if image_png is not None:
            content = [{"type": "text", "text": user},
                       {"type": "image_url",
                        "image_url": {"url": image_data_url(image_png, self.config.image_width)}}]
        messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
        kwargs: dict[str, Any] = {"model": self.config.model, "messages": messages}
        if tools:
            kwargs["tools"] = tools
            kwargs["tool_choice"] = tool_choice
        usage = AIUsage()  # every attempt's tokens are paid for, so all are counted
        attempts = 0
        reason = ""
        while attempts <= self.config.max_retries:
            if attempts:
                await self._sleep(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempts - 1)))
            attempts += 1
            try:
                reply = await self._attempt(kwargs, usage)
            except _Retryable as e:
                reason = e.reason
                log.warning("ai call model=%s attempt=%d failed: %s", self.config.model, attempts, reason)
                continue
            except AIError as e:
                self._account(usage, attempts, e.reason)
                raise AIError(e.reason, attempts) from e
            reply.attempts = attempts
            reply.usage = usage
            self._account(usage, attempts, "ok")
            return reply
        self._account(usage, attempts, reason)
        raise AIError(reason, attempts)

    def _account(self, usage: AIUsage, attempts: int, outcome: str) -> None:
        self.totals.add(usage)
        self.calls += 1
        log.info("ai call model=%s prompt_tokens=%d completion_tokens=%d cost=%.6f attempts=%d "
                 "outcome=%s", self.config.model, usage.prompt_tokens, usage.completion_tokens,
                 usage.cost, attempts, outcome)

    async def _attempt(self, kwargs: dict[str, Any], usage: AIUsage) -> AIReply:
        client = await self._openai()
        import openai  # loaded by _openai already

        try:
            async with self._slots:  # per attempt: a back-off sleep holds no slot
                completion = await client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            raise _Retryable("timeout")
        except openai.APIConnectionError as e:
            raise _Retryable(f"connection failed: {e}")
        except openai.APIStatusError as e:
            if e.status_code >= 500 or e.status_code in (408, 409, 429):
                raise _Retryable(f"http {e.status_code}")
            raise AIError(f"http {e.status_code}: {e.message}")
        except openai.OpenAIError as e:  # e.g. a body that is not a chat completion
            raise _Retryable(f"bad response: {e}")
        if completion.usage is not None:
            p, c = completion.usage.prompt_tokens or 0, completion.usage.completion_tokens or 0
            usage.add(AIUsage(p, c, self._cost(p, c)))
        if not completion.choices:
            raise _Retryable("bad response: no choices")
        message = completion.choices[0].message
        calls: list[ToolCall] = []
        for tc in message.tool_calls or []:
            fn = getattr(tc, "function", None)
            if fn is None:
                continue
            try:
                args = json.loads(fn.arguments or "{}")
            except ValueError as e:
                raise _Retryable(f"bad tool call JSON for {fn.name!r}: {e}")
            if not isinstance(args, dict):
                raise _Retryable(f"bad tool call JSON for {fn.name!r}: arguments are not an object")
            calls.append(ToolCall(id=tc.id, name=fn.name, arguments=args))
        return AIReply(text=message.content or "", tool_calls=calls, usage=usage, attempts=0)
