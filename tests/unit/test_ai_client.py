"""AIClient through the real openai client against the scripted OpenAI-compatible server."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from actors.coordinator.ai.client import AIClient, AIConfig, AIError
from virtual.model_server import (ScriptedModel, reply_error, reply_malformed_tool, reply_text,
                                  reply_tool)

TOOLS = [{"type": "function", "function": {
    "name": "tap", "description": "tap a point",
    "parameters": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                   "required": ["x", "y"]}}}]


class Sleeps:
    """An injected sleep that records the back-off instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, s: float) -> None:
        self.delays.append(s)


@pytest.fixture
def model(scripted_model: ScriptedModel) -> ScriptedModel:
    return scripted_model


def client(model: ScriptedModel, **kw) -> tuple[AIClient, Sleeps]:
    sleeps = Sleeps()
    cfg = AIConfig(base_url=model.base_url, model="m1", timeout_s=5, **kw)
    return AIClient(cfg, sleep=sleeps), sleeps


async def test_retries_server_errors_then_succeeds_with_tool_call(model) -> None:
    model.script = [reply_error(500), reply_error(503), reply_tool("tap", x=10, y=20)]
    ai, sleeps = client(model)
    reply = await ai.chat("sys", "go", tools=TOOLS)
    assert reply.attempts == 3
    assert [(t.name, t.arguments) for t in reply.tool_calls] == [("tap", {"x": 10, "y": 20})]
    assert sleeps.delays == [0.5, 1.0]  # back-off doubles, through the injected sleep
    assert len(model.requests) == 3
    assert model.requests[0]["tools"][0]["function"]["name"] == "tap"
    assert model.requests[0]["model"] == "m1"
    await ai.close()


async def test_server_error_reported_after_retries(model) -> None:
    model.script = [reply_error(500)]
    ai, sleeps = client(model, max_retries=2)
    with pytest.raises(AIError) as e:
        await ai.chat("sys", "go")
    assert e.value.reason == "http 500" and e.value.attempts == 3
    assert "http 500" in str(e.value)
    assert len(model.requests) == 3 and len(sleeps.delays) == 2
    await ai.close()


async def test_client_error_is_not_retried(model) -> None:
    model.script = [reply_error(401, "bad key")]
    ai, _ = client(model)
    with pytest.raises(AIError) as e:
        await ai.chat("sys", "go")
    assert e.value.reason.startswith("http 401") and e.value.attempts == 1
    assert len(model.requests) == 1
    await ai.close()


async def test_malformed_tool_call_retried_then_named(model) -> None:
    model.script = [reply_malformed_tool("tap"), reply_tool("tap", x=1, y=2)]
    ai, _ = client(model)
    assert (await ai.chat("s", "u", tools=TOOLS)).attempts == 2
    model.script = [reply_malformed_tool("tap")]
    with pytest.raises(AIError) as e:
        await ai.chat("s", "u", tools=TOOLS)
    assert "bad tool call JSON" in e.value.reason and "'tap'" in e.value.reason
    await ai.close()


async def test_image_sent_downscaled_as_jpeg(model) -> None:
    frame = np.zeros((2400, 1080, 3), np.uint8)
    png = cv2.imencode(".png", frame)[1].tobytes()
    model.script = [reply_text("a screen")]
    ai, _ = client(model, image_width=270)
    reply = await ai.chat("sys", "what is this", image_png=png)
    assert reply.text == "a screen" and reply.tool_calls == []
    parts = model.requests[0]["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "what is this"}
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    img = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (600, 270)
    await ai.close()


async def test_usage_and_cost_counted_per_call_and_in_total(model) -> None:
    model.prompt_tokens, model.completion_tokens = 1000, 200
    model.script = [reply_error(502), reply_text("x")]
    ai, _ = client(model, price_prompt_per_mtok=2.0, price_completion_per_mtok=10.0)
    reply = await ai.chat("s", "u")
    assert reply.usage.prompt_tokens == 1000 and reply.usage.completion_tokens == 200
    assert reply.usage.cost == pytest.approx(0.002 + 0.002)
    model.script = [reply_text("y")]
    await ai.chat("s", "u")
    assert ai.totals.prompt_tokens == 2000 and ai.totals.completion_tokens == 400
    assert ai.totals.cost == pytest.approx(0.008) and ai.calls == 2
    await ai.close()


def test_config_from_env() -> None:
    assert AIConfig.from_env({}) is None
    cfg = AIConfig.from_env({"PHONEFARM_AI_BASE_URL": "http://h/v1", "PHONEFARM_AI_MODEL": "llava",
                             "PHONEFARM_AI_KEY": "k"})
    assert (cfg.base_url, cfg.model, cfg.api_key) == ("http://h/v1", "llava", "k")


async def test_requests_in_flight_are_capped(model) -> None:
    """A burst of dispatches resolving ${ai.*} at once: the endpoint sees at most
    max_concurrent requests together; every call is still answered."""
    import asyncio

    model.delay_s = 0.05
    model.script = [reply_text("hi")]
    ai, _ = client(model, max_concurrent=3)
    replies = await asyncio.gather(*(ai.chat("sys", f"q{i}") for i in range(12)))
    assert len(replies) == 12 and len(model.requests) == 12
    assert model.max_in_flight == 3
    await ai.close()


async def test_the_openai_client_is_made_at_the_first_call_off_the_event_loop(
        model, monkeypatch) -> None:
    # Importing openai costs ~2 s of CPU: made on the loop, the first AI call of a farm
    # stalled every API request behind it (a 10 s client timeout on a loaded CI machine).
    import threading

    import actors.coordinator.ai.client as ai_module

    made_in: list[threading.Thread] = []
    real = ai_module._openai_client

    def recording(config):
        made_in.append(threading.current_thread())
        return real(config)

    monkeypatch.setattr(ai_module, "_openai_client", recording)
    model.script = [reply_text("one"), reply_text("two")]
    ai, _ = client(model)
    assert made_in == []  # not at construction: a coordinator without AI calls never pays it
    await ai.chat("sys", "go")
    await ai.chat("sys", "again")
    assert len(made_in) == 1 and made_in[0] is not threading.main_thread()
    await ai.close()
