"""actors/node/readings.py: the numbering and shape of the node's issue-21 data events."""

from __future__ import annotations

from actors.node.readings import FAILED_POST_SEQ, HEALTH_SEQ, Readings, hashtags_of, sender_of
from protocol.messages import RunSequence
from sequences.model import IfScreenStep, RecordPostStep, TapStep, TypeStep


def readings(steps: list, execution_id: str = "ex-42", resume_from: int = 0
             ) -> tuple[Readings, list]:
    sent: list = []
    run = RunSequence(execution_id=execution_id, run_id="r", sequence="s", steps=steps,
                      app="clipshare", account="clipshare.a1", resume_from=resume_from)
    return Readings(run, "serial-1", lambda e, d: sent.append((e, d)), clock=lambda: 7.0), sent


def test_events_carry_the_execution_and_number_per_step() -> None:
    r, sent = readings([TypeStep(text="x")])
    r.health_signal("relogin", "clipshare/login")      # during preparation (index -1)
    r.at_step(0)
    r.metric("followers", 12, None)
    r.metric("posts", 3, None)
    r.at_step(0)                                        # a nested step of the same index
    r.metric("following", 5, None)
    r.at_step(3)
    r.health_signal("challenge", "clipshare/interrupt:verify")
    r.messages_read("ann", [{"sender": "them", "text": "hi"}])
    r.health_signal("relogin", "clipshare/login")      # once per execution
    # Health signals are numbered apart: a step's events keep theirs with or without one
    # (a replay of step 3 that meets no such screen gives its messages the same number).
    assert [d["seq"] for _, d in sent] == [HEALTH_SEQ["relogin"], 1001, 1002, 1003,
                                           HEALTH_SEQ["challenge"], 4001]
    assert sent[1] == ("metric_recorded", {
        "execution_id": "ex-42", "serial": "serial-1", "account": "clipshare.a1",
        "app": "clipshare",
        "at": 7.0, "seq": 1001, "metric": "followers", "value": 12, "post": None})
    assert [e for e, _ in sent].count("health_signal") == 2


def test_a_failed_post_only_for_a_post_sequence_that_started_and_did_not_post() -> None:
    steps = [TypeStep(text="hi #a #b #a", label="caption"),
             IfScreenStep(screen="clipshare/feed", then=[RecordPostStep(caption_step="caption")])]
    r, sent = readings(steps)
    r.post_failed("locked", "held by 7")               # before its first step: nothing tried
    assert sent == []
    r.at_step(0)
    r.typed["caption"] = "hi #a #b #a"
    r.post_failed("challenge_screen", "verification")
    r.post_failed("challenge_screen", "again")         # once
    ((event, data),) = sent
    assert event == "post_recorded" and data["status"] == "failed"
    assert data["seq"] == FAILED_POST_SEQ and data["caption"] == "hi #a #b #a"
    assert data["hashtags"] == ["#a", "#b"] and data["reason"] == "challenge_screen: verification"

    r, sent = readings(steps)
    r.at_step(1)
    r.posted("hi", [], "m.mp4", None)
    r.post_failed("timeout", None)                     # it had posted: no failed post
    assert [d["status"] for _, d in sent] == ["posted"]

    r, sent = readings([TypeStep(text="no post here")], execution_id="123")
    r.at_step(0)
    r.post_failed("timeout", None)
    assert sent == []


def test_the_execution_id_is_the_key_even_when_it_is_all_digits() -> None:
    r, sent = readings([TypeStep(text="x")], execution_id="101")
    r.at_step(0)
    r.metric("followers", 1, None)
    assert sent[0][1]["execution_id"] == "101"


def test_a_failure_held_for_recovery_is_no_failed_post() -> None:
    """AI recovery may still post: the coordinator records the failed post if it fails."""
    steps = [TypeStep(text="Sunny #beach", label="caption"), RecordPostStep(caption_step="caption")]
    r, sent = readings(steps)
    r.at_step(0)
    r.typed["caption"] = "Sunny #beach"
    r.post_failed("unknown_screen", "?", held=True)
    assert sent == []
    r.post_failed("lock_lost", "held by 7")            # a real end: the failed post
    assert [(d["status"], d["caption"]) for _, d in sent] == [("failed", "Sunny #beach")]


def test_a_resumed_execution_posts_the_resolved_caption_or_had_posted() -> None:
    steps = [TypeStep(text="Sunny #beach", label="caption"), TapStep(x=1, y=1),
             RecordPostStep(caption_step="caption"), TapStep(x=2, y=2)]
    # Resumed at the tap after the type step (recovery, node restart): the caption is the
    # type step's resolved text though this playback did not type it.
    r, sent = readings(steps, resume_from=1)
    r.at_step(2)
    assert r.caption("caption") == "Sunny #beach"
    r.post_failed("timeout", None)
    assert [(d["status"], d["caption"]) for _, d in sent] == [("failed", "Sunny #beach")]
    # Resumed past the record_post step: the earlier playback posted; no failed post now.
    r, sent = readings(steps, resume_from=3)
    r.at_step(3)
    r.post_failed("timeout", None)
    assert sent == []
    # A caption waiting for a read variable is only known to the playback that typed it.
    r, _ = readings([TypeStep(text="${read.x} #a", label="caption"),
                     RecordPostStep(caption_step="caption")], resume_from=1)
    assert r.caption("caption") is None


def test_hashtags_and_sides() -> None:
    assert hashtags_of("Sun #beach, #sun_set! #beach #日本") == ["#beach", "#sun_set", "#日本"]
    assert hashtags_of("") == []
    assert sender_of([10, 0, 200, 20], 600) == "them" and sender_of([350, 0, 590, 20], 600) == "us"
