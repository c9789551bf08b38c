"""${ai.*} variables: AIVariables over the real openai client against the scripted server,
cached per run; RunManager gives each run its provider, and a clear error while AI is off."""

from __future__ import annotations

import asyncio
import random

import pytest

from actors.coordinator.ai.client import AIClient, AIConfig
from actors.coordinator.ai.variables import AIVariables
from actors.store.farm_db import FarmDB, seed_demo
from actors.coordinator.runs import RunManager
from protocol.errors import VariableError
from protocol.messages import RunSequence
from sequences.load import walk_steps
from sequences.variables import VariableContext, resolve
from virtual.model_server import ScriptedModel, reply_text

# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py engine).
pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture
def model(scripted_model: ScriptedModel) -> ScriptedModel:
    return scripted_model


async def test_caption_response_hashtags_resolved_and_cached(model) -> None:
    def script(body: dict) -> dict:
        user = body["messages"][1]["content"]
        if "hashtags" in user:
            return reply_text("#Beach, #sunset #beach surf #waves")
        if "reply" in user:
            return reply_text("So true!")
        return reply_text('"Golden hour at the beach"')

    model.script = script
    ai = AIClient(AIConfig(base_url=model.base_url, model="m"))
    provider = AIVariables(ai, asyncio.get_running_loop())
    ctx = VariableContext(serial="p1", ai=provider)
    text = "${ai.caption(a beach sunset)} ${ai.hashtags(beach,3)} / ${ai.response(nice pic)}"
    out = await asyncio.to_thread(resolve, text, ctx, random.Random(1))
    assert out == "Golden hour at the beach #Beach #sunset #surf / So true!"
    again = await asyncio.to_thread(resolve, "${ai.caption(a beach sunset)}", ctx, random.Random(2))
    assert again == "Golden hour at the beach"
    assert len(model.requests) == 3  # the second caption came from the run's cache
    assert "a beach sunset" in model.requests[0]["messages"][1]["content"]
    await ai.close()


async def test_on_the_loop_thread_it_refuses_instead_of_deadlocking(model) -> None:
    ai = AIClient(AIConfig(base_url=model.base_url, model="m"))
    with pytest.raises(RuntimeError):
        AIVariables(ai, asyncio.get_running_loop()).caption("x")
    await ai.close()


class StubHub:
    def __init__(self, ai) -> None:
        self.ai = ai
        self.sent: list[RunSequence] = []

    def phones(self) -> list[dict]:
        return [{"serial": s, "node": "n1"} for s in ("s1", "s2")]

    async def send_run(self, serial: str, run: RunSequence) -> dict:
        self.sent.append(run)
        return {"status": "ok"}


SEQUENCE = {"name": "say", "app": "clipshare", "recovery_prompt": "get to the feed",
            "steps": [{"type": "type", "text": "${ai.caption(hello)}"}]}


async def test_runs_get_one_provider_each_and_a_clear_error_while_ai_is_off(tmp_path, model) -> None:
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    await seed_demo(db, ["s1", "s2"])
    try:
        off = StubHub(None)
        started = await RunManager(off, db, tmp_path).start(SEQUENCE, "phone:all")
        for execution in started["executions"].values():
            assert execution["status"] == "failed"
            assert "AI is off" in execution["error"] and "--ai-base-url" in execution["error"]
        model.script = [reply_text("Hi there")]
        ai = AIClient(AIConfig(base_url=model.base_url, model="m"))
        on = StubHub(ai)
        runs = RunManager(on, db, tmp_path)
        await runs.start(SEQUENCE, "phone:all")
        texts = [s.text for run in on.sent for _, s in walk_steps(run.steps)]
        assert texts == ["Hi there", "Hi there"] and len(model.requests) == 1  # one per run
        assert all(run.recovery_prompt == "get to the feed" for run in on.sent)
        assert off.sent == []
        await runs.start(SEQUENCE, "phone:s1")
        assert len(model.requests) == 2  # a new run asks again
        await ai.close()
    finally:
        await db.close()
