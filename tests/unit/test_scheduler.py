"""The scheduler core: when schedules fire, per-phone exclusivity, node stagger, account
fairness, dependencies, retry and misfires, all on a fake clock (nothing sleeps)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from actors.coordinator.scheduling.scheduler import (Job, JobRetry, Misfire, Schedule, Scheduler, SchedulerState,
                              next_fire, plan_window, recurrence_to_cron)

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=timezone.utc)  # a Monday


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Farm:
    """Fake phones: a target table, one node per phone unless told, and a dispatch that
    records what started and can answer "locked" for chosen phones."""

    def __init__(self, targets: dict[str, list[tuple[str, str | None]]],
                 nodes: dict[str, str] | None = None) -> None:
        self.targets = targets
        self.nodes = nodes or {}
        self.locked: set[str] = set()
        self.started: list[Job] = []
        self.running: dict[str, str] = {}
        self.overlap = False

    def resolve(self, target: str) -> list[tuple[str, str | None]]:
        return list(self.targets[target])

    def node_of(self, serial: str) -> str:
        return self.nodes.get(serial, f"node-{serial}")

    async def dispatch(self, job: Job) -> str:
        if job.serial in self.locked:
            return "locked"
        if job.serial in self.running:
            self.overlap = True
        self.running[job.serial] = job.id
        self.started.append(job)
        return "started"

    def finish(self, sched: Scheduler, job_id: str, status: str = "completed") -> None:
        job = sched.state.jobs[job_id]
        self.running.pop(job.serial, None)
        sched.job_finished(job_id, status)


def make(farm: Farm, clock: Clock, **kw) -> Scheduler:
    return Scheduler(clock=clock, resolve_targets=farm.resolve, node_of=farm.node_of,
                     dispatch=farm.dispatch, **kw)


def kinds(events, kind: str):
    return [e for e in events if e.kind == kind]


# --- next_fire / plan_window -----------------------------------------------------------------

def test_next_fire_for_every_type() -> None:
    at = T0 + timedelta(hours=1)
    sch = Schedule(id="s", sequence="q", target="t", type="scheduled", at=at)
    assert next_fire(sch, T0) == at
    assert next_fire(sch, at) is None
    imm = Schedule(id="i", sequence="q", target="t", type="immediate")
    assert next_fire(imm, T0) is None
    cron = Schedule(id="c", sequence="q", target="t", type="recurring", cron="30 9 * * *")
    assert next_fire(cron, T0) == datetime(2025, 3, 3, 9, 30, tzinfo=timezone.utc)
    assert next_fire(cron, datetime(2025, 3, 3, 9, 30, tzinfo=timezone.utc)) == \
        datetime(2025, 3, 4, 9, 30, tzinfo=timezone.utc)
    bounded = Schedule(id="b", sequence="q", target="t", type="recurring", cron="30 9 * * *",
                       until=T0 + timedelta(days=1))
    assert next_fire(bounded, T0 + timedelta(hours=2)) is None
    win = Schedule(id="w", sequence="q", target="t", type="window", window_start=T0,
                   window_end=T0 + timedelta(hours=1), count=3, seed=7)
    first = next_fire(win, T0)
    assert first is not None and T0 < first < T0 + timedelta(hours=1)
    with pytest.raises(ValueError):
        next_fire(sch, datetime(2025, 1, 1))  # naive datetimes are refused


def test_recurrence_json_translates_to_cron() -> None:
    assert recurrence_to_cron({"every": "day", "at": "09:15"}) == "15 9 * * *"
    assert recurrence_to_cron({"every": "week", "at": "18:00", "days": ["mon", "Thursday"]}) \
        == "0 18 * * mon,thu"
    assert recurrence_to_cron({"every": "hour", "at": ":05"}) == "5 * * * *"
    assert recurrence_to_cron({"every": "minute", "interval": 10}) == "*/10 * * * *"
    assert recurrence_to_cron({"every": "month", "at": "06:00", "days": [1, 15]}) \
        == "0 6 1,15 * *"
    for bad in ({"every": "fortnight"}, {"every": "day", "at": "25:00"},
                {"every": "week", "days": ["funday"]}, {"every": "day", "when": "x"}):
        with pytest.raises(ValueError):
            recurrence_to_cron(bad)
    weekly = Schedule(id="r", sequence="q", target="t", type="recurring",
                      recurrence={"every": "week", "at": "18:00", "days": ["wed", "fri"]})
    got, t = [], T0
    for _ in range(3):
        t = next_fire(weekly, t)
        got.append(t)
    assert got == [datetime(2025, 3, 5, 18, tzinfo=timezone.utc),
                   datetime(2025, 3, 7, 18, tzinfo=timezone.utc),
                   datetime(2025, 3, 12, 18, tzinfo=timezone.utc)]


def test_plan_window_spreads_inside_distinct_and_deterministic() -> None:
    start, end = T0, T0 + timedelta(hours=2)
    times = plan_window(start, end, 8, random.Random(42), min_gap_s=300)
    assert len(times) == 8 and times == sorted(times)
    assert all(start <= t <= end for t in times)
    assert len(set(times)) == 8
    assert all((b - a).total_seconds() >= 300 for a, b in zip(times, times[1:]))
    assert plan_window(start, end, 8, random.Random(42), min_gap_s=300) == times
    assert plan_window(start, end, 8, random.Random(43), min_gap_s=300) != times
    with pytest.raises(ValueError):
        plan_window(start, start + timedelta(minutes=10), 5, random.Random(1), min_gap_s=300)
    assert plan_window(start, end, 0, random.Random(1)) == []


def test_plan_window_is_roughly_uniform() -> None:
    # Over many seeds every tenth of the window gets about a tenth of the times.
    start, end = T0, T0 + timedelta(hours=10)
    bins = [0] * 10
    for seed in range(200):
        for t in plan_window(start, end, 5, random.Random(seed), min_gap_s=60):
            bins[min(9, int((t - start).total_seconds() // 3600))] += 1
    assert sum(bins) == 1000
    assert all(70 <= b <= 130 for b in bins), bins


# --- firing ----------------------------------------------------------------------------------

async def test_each_type_fires_at_its_instants() -> None:
    clock = Clock()
    farm = Farm({"phone:a": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="now", sequence="q", target="phone:a", type="immediate"))
    sched.add(Schedule(id="at", sequence="q", target="phone:a", type="scheduled",
                       at=T0 + timedelta(minutes=10)))
    sched.add(Schedule(id="cron", sequence="q", target="phone:a", type="recurring",
                       cron="*/30 * * * *"))
    win = sched.add(Schedule(id="win", sequence="q", target="phone:a", type="window",
                             window_start=T0 + timedelta(minutes=5),
                             window_end=T0 + timedelta(minutes=50), count=3, seed=1))
    planned = plan_window(win.window_start, win.window_end, 3, random.Random(1), 60)

    fired: dict[str, list[datetime]] = {}
    end = T0 + timedelta(hours=1, minutes=1)
    while clock.now <= end:
        for e in kinds(await sched.tick(), "fired"):
            fired.setdefault(e.schedule_id, []).append(clock.now)
        for job_id in list(farm.running.values()):
            farm.finish(sched, job_id)
        clock.advance(1)

    assert fired["now"] == [T0]
    assert fired["at"] == [T0 + timedelta(minutes=10)]
    assert fired["cron"] == [T0, T0 + timedelta(minutes=30), T0 + timedelta(minutes=60)]
    assert fired["win"] == planned
    assert sched.state.schedules["at"].status == "completed"
    assert sched.state.schedules["win"].status == "completed"
    assert sched.state.schedules["cron"].status == "active"
    assert not kinds(sched.events, "misfire")


async def test_recurring_by_recurrence_json_fires_daily() -> None:
    clock = Clock()
    farm = Farm({"group:warm": [("a", "tiktok.1")]})
    sched = make(farm, clock)
    sched.add(Schedule(id="d", sequence="q", target="group:warm", type="recurring",
                       recurrence={"every": "day", "at": "09:00"}))
    fired = []
    for hours in range(0, 48):  # Monday 08:00 to Wednesday 07:00
        clock.now = T0 + timedelta(hours=hours, minutes=0)
        # Tick a little after every hour as the production loop would (a second late).
        clock.advance(1)
        fired += [e.detail["occurrence"] for e in kinds(await sched.tick(), "fired")]
    assert fired == ["2025-03-03T09:00:00+00:00", "2025-03-04T09:00:00+00:00"]


async def test_targets_are_resolved_at_fire_time() -> None:
    clock = Clock()
    farm = Farm({"group:all": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="r", sequence="q", target="group:all", type="recurring",
                       cron="0 * * * *"))
    clock.now = T0 + timedelta(hours=1)
    await sched.tick()
    assert {j.serial for j in farm.started} == {"a"}
    farm.finish(sched, farm.started[0].id)
    farm.targets["group:all"].append(("b", None))  # a phone joins the group
    clock.now = T0 + timedelta(hours=2)
    await sched.tick()
    second = [j for j in farm.started if j.occurrence == clock.now]
    assert {j.serial for j in second} == {"a", "b"}


# --- phones, nodes, accounts -------------------------------------------------------------

async def test_never_two_jobs_on_one_phone_and_all_run_eventually() -> None:
    clock = Clock()
    farm = Farm({"all": [("a", None), ("b", None)]}, nodes={"a": "n1", "b": "n2"})
    sched = make(farm, clock)
    for i in range(3):
        sched.add(Schedule(id=f"s{i}", sequence="q", target="all", type="immediate"))
    for _ in range(10):
        await sched.tick()
        assert len(farm.running) <= 2
        assert all(sum(1 for j in sched.state.jobs.values()
                       if j.serial == s and j.status == "running") <= 1 for s in "ab")
        # One job per phone finishes each second.
        for job_id in list(farm.running.values()):
            farm.finish(sched, job_id)
        clock.advance(1)
    assert not farm.overlap
    assert len(farm.started) == 6
    assert all(j.status == "completed" for j in sched.state.jobs.values())


async def test_locked_phone_keeps_its_job_queued() -> None:
    clock = Clock()
    farm = Farm({"a": [("a", None)]})
    farm.locked.add("a")  # a manual run holds the phone
    sched = make(farm, clock)
    sched.add(Schedule(id="s", sequence="q", target="a", type="immediate"))
    events = await sched.tick()
    assert kinds(events, "locked") and not farm.started
    assert [j.id for j in sched.queued("a")] == [next(iter(sched.state.jobs))]
    farm.locked.clear()
    clock.advance(1)
    events = await sched.tick()
    assert kinds(events, "dispatched") and len(farm.started) == 1


async def test_a_locked_phone_does_not_hold_its_node() -> None:
    clock = Clock()
    farm = Farm({"rack": [("a", None), ("b", None)]}, nodes={"a": "n1", "b": "n1"})
    farm.locked.add("a")
    sched = make(farm, clock)
    sched.add(Schedule(id="s", sequence="q", target="rack", type="immediate"))
    events = await sched.tick()
    assert kinds(events, "locked") and [j.serial for j in farm.started] == ["b"]


async def test_dispatches_to_one_node_are_staggered() -> None:
    clock = Clock()
    farm = Farm({"rack": [("a", None), ("b", None), ("c", None)]},
                nodes={"a": "n1", "b": "n1", "c": "n1"})
    sched = make(farm, clock)
    sched.add(Schedule(id="s", sequence="q", target="rack", type="immediate"))
    starts: list[datetime] = []
    for _ in range(3):
        for e in kinds(await sched.tick(), "dispatched"):
            starts.append(e.at)
        clock.advance(0.5)  # ticks faster than the stagger
    for _ in range(4):
        for e in kinds(await sched.tick(), "dispatched"):
            starts.append(e.at)
        clock.advance(0.5)
    assert len(starts) == 3
    assert all((b - a).total_seconds() >= 1 for a, b in zip(starts, starts[1:]))


async def test_a_node_starts_one_per_stagger_on_average_up_to_its_burst_per_tick() -> None:
    clock = Clock()
    phones = [(f"p{i:02d}", None) for i in range(30)]
    farm = Farm({"rack": phones}, nodes={p: "n1" for p, _ in phones})
    sched = make(farm, clock, stagger_s=0.1, max_node_burst=10)
    sched.add(Schedule(id="s", sequence="q", target="rack", type="immediate"))
    counts = []
    for step in (0, 0.35, 0.05, 1.0, 5.0):
        clock.advance(step)
        counts.append(len(kinds(await sched.tick(), "dispatched")))
    # An idle node: its burst at once; then one per 0.1 s elapsed (0.4 s: the 4th since the
    # burst); never more than the burst.
    assert counts == [10, 3, 1, 10, 6]  # the last 6 are all that is left
    with pytest.raises(ValueError):
        make(farm, clock, max_node_burst=0)


async def test_finished_one_shot_schedules_are_pruned_unless_named() -> None:
    clock = Clock()
    farm = Farm({"x": [("a", None)]})
    sched = make(farm, clock, stagger_s=0, prune_finished=True,
                 keep=lambda sid: sid.startswith("keep"))
    for sid in ("A", "keep-me"):
        sched.add(Schedule(id=sid, sequence="q", target="x", type="immediate"))
    sched.add(Schedule(id="B", sequence="q", target="x", type="scheduled",
                       at=T0 + timedelta(minutes=1), depends_on=["A"]))
    sched.add(Schedule(id="R", sequence="q", target="x", type="recurring", cron="0 0 1 1 *"))
    for _ in range(3):
        await sched.tick()
        for job_id in list(farm.running.values()):
            farm.finish(sched, job_id)
        clock.advance(1)
    # A ended but B names it (not fired yet): kept; keep-me is the owner's; R recurs.
    assert set(sched.state.schedules) == {"A", "B", "keep-me", "R"}
    assert sched.take_finished() == []
    clock.advance(60)
    for _ in range(3):
        await sched.tick()
        for job_id in list(farm.running.values()):
            farm.finish(sched, job_id)
    assert set(sched.state.schedules) == {"keep-me", "R"}
    assert [(s.id, st.dropped) for s, st in sched.take_finished()] == [
        ("A", {"completed": 1}), ("B", {"completed": 1})]
    assert not any(j.schedule_id in ("A", "B") for j in sched.state.jobs.values())
    changes = sched.take_changes()
    assert {"A", "B"} <= changes.gone_schedules


async def test_other_nodes_are_not_held_by_the_stagger() -> None:
    clock = Clock()
    farm = Farm({"rack": [("a", None), ("b", None)]}, nodes={"a": "n1", "b": "n2"})
    sched = make(farm, clock)
    sched.add(Schedule(id="s", sequence="q", target="rack", type="immediate"))
    assert len(kinds(await sched.tick(), "dispatched")) == 2


async def test_round_robin_across_accounts_of_one_phone() -> None:
    clock = Clock()
    farm = Farm({"x": [("a", "ig.1")], "y": [("a", "ig.2")], "z": [("a", "ig.3")]})
    sched = make(farm, clock)
    # ig.1 has three schedules queued before the others have any.
    for i in range(3):
        sched.add(Schedule(id=f"x{i}", sequence="q", target="x", type="immediate"))
    sched.add(Schedule(id="y0", sequence="q", target="y", type="immediate"))
    sched.add(Schedule(id="z0", sequence="q", target="z", type="immediate"))
    order = []
    for _ in range(8):
        await sched.tick()
        for job_id in list(farm.running.values()):
            order.append(sched.state.jobs[job_id].account)
            farm.finish(sched, job_id)
        clock.advance(1)
    assert order == ["ig.1", "ig.2", "ig.3", "ig.1", "ig.1"]


# --- dependencies and retry --------------------------------------------------------------

async def _run_chain(result_of_a: str):
    clock = Clock()
    farm = Farm({"p": [("a", "tt.1"), ("b", "tt.1")]}, nodes={"a": "n1", "b": "n2"})
    sched = make(farm, clock)
    sched.add(Schedule(id="A", sequence="login", target="p", type="immediate"))
    sched.add(Schedule(id="B", sequence="post", target="p", type="immediate", depends_on=["A"]))
    sched.add(Schedule(id="C", sequence="like", target="p", type="immediate", depends_on=["B"]))
    await sched.tick()
    assert {j.schedule_id for j in farm.started} == {"A"}  # B and C wait while A runs
    clock.advance(1)
    await sched.tick()
    assert {j.schedule_id for j in farm.started} == {"A"}
    a_on_a = next(j.id for j in farm.started if j.serial == "a")
    a_on_b = next(j.id for j in farm.started if j.serial == "b")
    farm.finish(sched, a_on_a, result_of_a)
    farm.finish(sched, a_on_b, "completed")
    for _ in range(6):
        clock.advance(1)
        await sched.tick()
        for job_id in list(farm.running.values()):
            farm.finish(sched, job_id)
    return sched, farm


async def test_failed_prerequisite_skips_its_dependents_with_the_reason() -> None:
    sched, farm = await _run_chain("failed")
    on_a = {j.schedule_id: j for j in sched.state.jobs.values() if j.serial == "a"}
    assert on_a["A"].status == "failed"
    assert on_a["B"].status == "skipped" and on_a["B"].reason == "prerequisite A failed"
    assert on_a["C"].status == "skipped" and on_a["C"].reason == "prerequisite B skipped"
    # The other phone's prerequisite completed: its dependents ran.
    on_b = {j.schedule_id: j.status for j in sched.state.jobs.values() if j.serial == "b"}
    assert on_b == {"A": "completed", "B": "completed", "C": "completed"}
    reasons = {e.job_id: e.detail["reason"] for e in kinds(sched.events, "skipped")}
    assert sorted(reasons.values()) == ["prerequisite A failed", "prerequisite B skipped"]


async def test_completed_prerequisite_lets_dependents_run_in_order() -> None:
    sched, farm = await _run_chain("completed")
    on_a = [j.schedule_id for j in farm.started if j.serial == "a"]
    assert on_a == ["A", "B", "C"]
    assert all(j.status == "completed" for j in sched.state.jobs.values())


async def test_dependent_waits_for_a_prerequisite_that_has_not_fired() -> None:
    clock = Clock()
    farm = Farm({"p": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="A", sequence="q", target="p", type="scheduled",
                       at=T0 + timedelta(minutes=5)))
    sched.add(Schedule(id="B", sequence="q", target="p", type="immediate", depends_on=["A"]))
    await sched.tick()
    assert not farm.started and sched.queued("a")[0].schedule_id == "B"
    clock.now = T0 + timedelta(minutes=5)
    await sched.tick()
    assert [j.schedule_id for j in farm.started] == ["A"]
    farm.finish(sched, farm.started[0].id)
    clock.advance(1)
    await sched.tick()
    assert [j.schedule_id for j in farm.started] == ["A", "B"]


async def test_dependency_on_a_cancelled_schedule_skips() -> None:
    clock = Clock()
    farm = Farm({"p": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="A", sequence="q", target="p", type="scheduled",
                       at=T0 + timedelta(minutes=5)))
    sched.add(Schedule(id="B", sequence="q", target="p", type="immediate", depends_on=["A"]))
    sched.cancel("A")
    await sched.tick()
    job = next(iter(sched.state.jobs.values()))
    assert job.status == "skipped" and job.reason == "prerequisite A will not run"


async def test_retry_policy_requeues_after_the_delay_then_fails() -> None:
    clock = Clock()
    farm = Farm({"p": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="s", sequence="q", target="p", type="immediate",
                       retry=JobRetry(attempts=1, delay_s=30)))
    await sched.tick()
    job_id = farm.started[0].id
    farm.finish(sched, job_id, "failed")
    assert sched.state.jobs[job_id].status == "queued"
    clock.advance(29)
    await sched.tick()
    assert len(farm.started) == 1  # not before the delay
    clock.advance(1)
    await sched.tick()
    assert len(farm.started) == 2 and sched.state.jobs[job_id].attempt == 2
    farm.finish(sched, job_id, "failed")
    assert sched.state.jobs[job_id].status == "failed"
    assert len(kinds(sched.events, "retry")) == 1


async def test_dispatch_that_fails_to_start_is_recorded_failed() -> None:
    clock = Clock()

    async def broken(job: Job) -> str:
        raise ConnectionError("node gone")

    sched = Scheduler(clock=clock, resolve_targets=lambda t: [("a", None)],
                      node_of=lambda s: "n1", dispatch=broken)
    sched.add(Schedule(id="s", sequence="q", target="p", type="immediate"))
    events = await sched.tick()
    assert kinds(events, "dispatch_failed")
    job = next(iter(sched.state.jobs.values()))
    assert job.status == "failed" and "node gone" in job.reason


# --- misfires ----------------------------------------------------------------------------

async def test_misfire_within_grace_runs_once_late() -> None:
    clock = Clock()
    farm = Farm({"p": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="m", sequence="q", target="p", type="recurring", cron="*/10 * * * *",
                       misfire=Misfire(grace_s=900)))
    await sched.tick()  # 08:00 fires on time
    farm.finish(sched, farm.started[0].id)
    # Down from 08:00 to 08:35: 08:10, 08:20 and 08:30 were missed; 08:30 is 5 min late.
    clock.now = T0 + timedelta(minutes=35)
    events = await sched.tick()
    fired = kinds(events, "fired")
    assert [e.detail["occurrence"] for e in fired] == ["2025-03-03T08:30:00+00:00"]
    (mis,) = kinds(events, "misfire")
    assert mis.detail["action"] == "run_late" and mis.detail["late_s"] == 300
    assert mis.detail["first_missed"] == "2025-03-03T08:10:00+00:00"
    assert len(farm.started) == 2
    assert sched.state.states["m"].next_due == T0 + timedelta(minutes=40)


async def test_misfire_beyond_grace_is_skipped_and_recorded() -> None:
    clock = Clock()
    farm = Farm({"p": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="m", sequence="q", target="p", type="scheduled",
                       at=T0 + timedelta(minutes=10), misfire=Misfire(grace_s=60)))
    clock.now = T0 + timedelta(minutes=20)  # down across the whole grace period
    events = await sched.tick()
    assert not kinds(events, "fired") and not farm.started
    (mis,) = kinds(events, "misfire")
    assert mis.detail["action"] == "skipped" and mis.detail["late_s"] == 600
    assert sched.state.schedules["m"].status == "completed"


async def test_recurring_misfire_never_replays_every_missed_occurrence() -> None:
    clock = Clock()
    farm = Farm({"p": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="m", sequence="q", target="p", type="recurring", cron="* * * * *",
                       misfire=Misfire(grace_s=30)))
    clock.now = T0 + timedelta(days=1, seconds=10)  # a day down, 1440 occurrences missed
    events = await sched.tick()
    assert len(kinds(events, "fired")) == 1  # only the latest minute, 10 s late
    assert sched.state.states["m"].next_due == T0 + timedelta(days=1, minutes=1)


# --- state ----------------------------------------------------------------------------------

async def test_state_round_trips_through_msgspec() -> None:
    clock = Clock()
    farm = Farm({"p": [("a", "ig.1")]})
    sched = make(farm, clock)
    sched.add(Schedule(id="r", sequence="q", target="p", type="recurring",
                       recurrence={"every": "hour", "at": ":00"}, depends_on=["x"]))
    sched.add(Schedule(id="x", sequence="q", target="p", type="immediate"))
    await sched.tick()
    blob = msgspec.json.encode(sched.state)
    back = msgspec.json.decode(blob, type=SchedulerState)
    assert back == sched.state
    events = msgspec.json.encode(sched.take_events())
    assert b'"kind":"fired"' in events and sched.events == []
    again = make(farm, clock, state=back)
    farm.finish(again, farm.started[0].id)
    clock.advance(1)
    assert kinds(await again.tick(), "dispatched")


# --- retention ------------------------------------------------------------------------------

PHONES = [(f"p{i}", f"tt.{i}") for i in range(10)]


async def _run_minutes(sched: Scheduler, farm: Farm, clock: Clock, minutes: int,
                       fail_on: set[str] = frozenset()) -> None:
    """Fire a per-minute schedule ``minutes`` times, finishing every started job (failed on
    the phones in ``fail_on``) before the next minute."""
    for _ in range(minutes):
        for _ in range(3):
            await sched.tick()
            for job_id in list(farm.running.values()):
                serial = sched.state.jobs[job_id].serial
                farm.finish(sched, job_id, "failed" if serial in fail_on else "completed")
            clock.advance(1)
        sched.take_events()
        clock.now = clock.now.replace(second=0) + timedelta(minutes=1)


async def test_finished_jobs_are_dropped_and_the_state_stays_small() -> None:
    clock = Clock()
    farm = Farm({"all": PHONES})
    sched = make(farm, clock)
    sched.add(Schedule(id="A", sequence="q", target="all", type="recurring", cron="* * * * *"))
    await _run_minutes(sched, farm, clock, 100)
    assert len(farm.started) == 1000
    sched.pause("A")
    await sched.tick()  # the last finishes are pruned on the next tick
    sched.take_events()
    # One schedule on ten phones: only its latest occurrence's jobs are kept.
    assert len(sched.state.jobs) <= 1 * len(PHONES)
    assert {j.occurrence for j in sched.state.jobs.values()} == {
        sched.state.states["A"].last_occurrence}
    st = sched.state.states["A"]
    assert sum(st.dropped.values()) + len(sched.state.jobs) >= 1000
    encoded = msgspec.json.encode(sched.state)
    # Keeping every job took ~250 bytes each (~250 KB here); now a few KB whatever the age.
    per_job = len(msgspec.json.encode(next(iter(sched.state.jobs.values()))))
    assert len(encoded) < 10_000 and len(encoded) < 1000 * per_job / 20
    # Handed-out events are nowhere in the state.
    assert sched.events == [] and b'"kind"' not in encoded


async def test_dependencies_see_the_latest_outcome_per_phone_after_pruning() -> None:
    clock = Clock()
    farm = Farm({"all": PHONES})
    sched = make(farm, clock)
    sched.add(Schedule(id="A", sequence="q", target="all", type="recurring", cron="* * * * *"))
    await _run_minutes(sched, farm, clock, 99)
    # A's latest occurrence: fails on p0 only (earlier ones all completed there).
    await _run_minutes(sched, farm, clock, 1, fail_on={"p0"})
    sched.pause("A")  # A's latest occurrence stays the latest
    await sched.tick()
    assert sum(sched.state.states["A"].dropped.values()) >= 900
    blob = msgspec.json.encode(sched.state)

    async def run_b(s: Scheduler, f: Farm) -> dict[str, tuple[str, str | None]]:
        s.add(Schedule(id="B", sequence="post", target="all", type="immediate",
                       depends_on=["A"]))
        for _ in range(5):
            await s.tick()
            for job_id in list(f.running.values()):
                f.finish(s, job_id)
            clock.advance(1)
        return {j.serial: (j.status, j.reason) for j in s.state.jobs.values()
                if j.schedule_id == "B"}

    outcome = await run_b(sched, farm)
    assert outcome["p0"] == ("skipped", "prerequisite A failed")
    assert all(outcome[f"p{i}"] == ("completed", None) for i in range(1, 10))
    # Reloaded from the pruned state, the same dependent gets the same outcome.
    farm2 = Farm({"all": PHONES})
    again = make(farm2, clock, state=msgspec.json.decode(blob, type=SchedulerState))
    assert await run_b(again, farm2) == outcome


async def test_a_queued_dependent_keeps_its_older_prerequisites() -> None:
    clock = Clock()
    farm = Farm({"p": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="A", sequence="q", target="p", type="recurring", cron="* * * * *"))
    await sched.tick()
    (a1,) = farm.started
    sched.add(Schedule(id="B", sequence="q", target="p", type="immediate", depends_on=["A"]))
    await sched.tick()
    (b,) = [j for j in sched.state.jobs.values() if j.schedule_id == "B"]
    assert b.waits_on == [a1.id]
    farm.locked.add("a")  # B stays queued while A fires again and again
    farm.finish(sched, a1.id)
    for _ in range(5):
        clock.now = clock.now.replace(second=0) + timedelta(minutes=1)
        await sched.tick()
    # A's later occurrences are the latest now, but B is still bound to the first one.
    assert sched.state.states["A"].fired == 6 and a1.id in sched.state.jobs
    sched.pause("A")
    farm.locked.clear()
    await sched.tick()
    assert farm.started[-1].id == b.id and b.status == "running"
    farm.finish(sched, b.id)
    clock.advance(1)
    await sched.tick()
    assert a1.id not in sched.state.jobs and sched.state.states["A"].dropped["completed"] == 1


# --- concurrent dispatch ------------------------------------------------------------------

class SlowFarm(Farm):
    """A dispatch that takes a (short, real) while, and counts how many are in flight."""

    def __init__(self, *a, delay_of=lambda serial: 0.01, **kw) -> None:
        super().__init__(*a, **kw)
        self.delay_of = delay_of
        self.in_flight: set[str] = set()
        self.max_in_flight = 0
        self.phone_overlap = False

    async def dispatch(self, job: Job) -> str:
        import asyncio
        if job.serial in self.in_flight:
            self.phone_overlap = True
        self.in_flight.add(job.serial)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        try:
            await asyncio.sleep(self.delay_of(job.serial))
            return await super().dispatch(job)
        finally:
            self.in_flight.discard(job.serial)


async def test_ready_jobs_on_different_phones_are_dispatched_concurrently() -> None:
    clock = Clock()
    serials = [f"p{i:02d}" for i in range(12)]
    # The later the serial, the sooner its dispatch ends: events must still be in serial order.
    farm = SlowFarm({"all": [(s, None) for s in serials]},
                    delay_of=lambda s: 0.001 * (20 - int(s[1:])))
    sched = make(farm, clock)
    sched.add(Schedule(id="s", sequence="q", target="all", type="immediate"))
    events = await sched.tick()
    assert sorted(j.serial for j in farm.started) == serials  # all in one tick
    assert farm.max_in_flight == len(serials)
    assert [j.serial for j in farm.started] != serials  # they really ended out of order
    assert [e.serial for e in kinds(events, "dispatched")] == serials
    assert not sched._dispatching


async def test_concurrent_dispatch_is_bounded() -> None:
    clock = Clock()
    serials = [f"p{i}" for i in range(10)]
    farm = SlowFarm({"all": [(s, None) for s in serials]})
    sched = make(farm, clock, max_concurrent_dispatch=3)
    sched.add(Schedule(id="s", sequence="q", target="all", type="immediate"))
    await sched.tick()
    assert len(farm.started) == 10 and farm.max_in_flight == 3


async def test_concurrent_dispatch_never_overlaps_jobs_on_one_phone() -> None:
    clock = Clock()
    farm = SlowFarm({"all": [("a", "x.1"), ("a", "x.2"), ("b", None), ("c", None)]},
                    nodes={"a": "n1", "b": "n2", "c": "n3"})
    sched = make(farm, clock, stagger_s=0)
    for i in range(2):
        sched.add(Schedule(id=f"s{i}", sequence="q", target="all", type="immediate"))
    on_a = []
    for _ in range(8):
        await sched.tick()
        assert farm.max_in_flight > 1 or not farm.started
        assert sum(1 for j in sched.state.jobs.values()
                   if j.serial == "a" and j.status == "running") <= 1
        on_a += [j for j in farm.running if j == "a"]
        for job_id in list(farm.running.values()):
            farm.finish(sched, job_id)
        clock.advance(1)
    assert not farm.overlap and not farm.phone_overlap
    assert len(farm.started) == 8  # a: 4 jobs over 4 ticks, b and c: 2 each
    assert len(on_a) == 4


async def test_concurrent_locked_answer_frees_the_node_for_its_next_phone() -> None:
    clock = Clock()
    farm = SlowFarm({"rack": [("a", None), ("b", None), ("c", None), ("d", None)]},
                    nodes={"a": "n1", "b": "n1", "c": "n1", "d": "n2"})
    farm.locked.update({"a", "b"})
    sched = make(farm, clock)
    sched.add(Schedule(id="s", sequence="q", target="rack", type="immediate"))
    events = await sched.tick()
    assert sorted(j.serial for j in farm.started) == ["c", "d"]
    assert [(e.kind, e.serial) for e in events if e.kind in ("locked", "dispatched")] == [
        ("locked", "a"), ("locked", "b"), ("dispatched", "c"), ("dispatched", "d")]
    assert sched.state.node_last == {"n1": clock.now, "n2": clock.now}


async def test_next_slot_is_when_a_node_stagger_gap_ends_for_a_waiting_job() -> None:
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)]
    started: list[str] = []

    async def dispatch(job):
        started.append(job.serial)
        return "started"

    sched = Scheduler(clock=lambda: now[0], resolve_targets=lambda t: [("p1", None), ("p2", None)],
                      node_of=lambda s: "n", dispatch=dispatch, stagger_s=0.1)
    assert sched.next_slot() is None
    sched.add(Schedule(id="a", sequence="s", target="all", type="immediate"))
    await sched.tick()
    assert started == ["p1"]  # one start per node per gap
    assert sched.next_slot() == now[0] + timedelta(seconds=0.1)
    now[0] += timedelta(seconds=0.1)
    await sched.tick()
    assert started == ["p1", "p2"] and sched.next_slot() is None


async def test_next_due_is_the_earliest_planned_time_or_retry_delay() -> None:
    """The service ticks at it, so a job starts at its planned time, not up to a tick late."""
    now = [datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)]
    answers = iter(["failed: boom", "started"])

    async def dispatch(job):
        return next(answers)

    sched = Scheduler(clock=lambda: now[0], resolve_targets=lambda t: [("p1", None)],
                      node_of=lambda s: "n", dispatch=dispatch)
    assert sched.next_due() is None
    later, sooner = now[0] + timedelta(seconds=30), now[0] + timedelta(seconds=5)
    sched.add(Schedule(id="later", sequence="s", target="all", type="scheduled", at=later))
    sched.add(Schedule(id="sooner", sequence="s", target="all", type="scheduled", at=sooner,
                       retry=JobRetry(attempts=1, delay_s=2)))
    assert sched.next_due() == sooner
    sched.pause("sooner")
    assert sched.next_due() == later
    sched.resume("sooner")
    now[0] = sooner
    await sched.tick()  # fires, the dispatch fails: a retry waits 2 s
    assert sched.next_due() == sooner + timedelta(seconds=2)


# --- bad schedules ---------------------------------------------------------------------------

def test_a_cron_that_never_fires_is_refused_and_nothing_is_stored() -> None:
    sched = make(Farm({}), Clock())
    with pytest.raises(ValueError) as bad:
        sched.add(Schedule(id="feb31", sequence="q", target="p", type="recurring",
                           cron="0 0 31 2 *"))
    assert getattr(bad.value, "field", None) == "$.cron"
    assert sched.state.schedules == {} and sched.state.states == {}
    assert not sched.take_changes()


@pytest.mark.parametrize("rec, field", [
    ({"every": "day", "at": 5}, "$.recurrence.at"),
    ({"every": "minute", "interval": [1]}, "$.recurrence.interval"),
    ({"every": "fortnight"}, "$.recurrence.every"),
    ({"every": "day", "at": "25:00"}, "$.recurrence.at"),
    ({"every": "week", "days": [3]}, "$.recurrence.days"),
    ({"every": "week", "days": ["funday"]}, "$.recurrence.days"),
    ({"every": "month", "days": ["mon"]}, "$.recurrence.days"),
    ({"every": "hour", "interval": 24}, "$.recurrence.interval"),
    ({"every": "week", "interval": 2}, "$.recurrence.interval"),
    ({"every": "day", "when": "x"}, "$.recurrence"),
])
def test_a_bad_recurrence_names_its_member(rec: dict, field: str) -> None:
    with pytest.raises(ValueError) as bad:
        recurrence_to_cron(rec)
    assert getattr(bad.value, "field", None) == field, bad.value


async def test_one_schedule_failing_in_a_tick_does_not_stop_the_others() -> None:
    """A schedule whose firing raises (here: its target cannot be resolved) is marked failed
    with the reason, and the other schedules fire in the same tick and in later ones."""
    clock = Clock()
    farm = Farm({"phone:a": [("a", None)]})  # "phone:gone" resolves to a KeyError
    sched = make(farm, clock, stagger_s=0)
    sched.add(Schedule(id="bad", sequence="q", target="phone:gone", type="recurring",
                       cron="* * * * *"))
    sched.add(Schedule(id="good", sequence="q", target="phone:a", type="recurring",
                       cron="* * * * *"))
    events = await sched.tick()
    assert [e.schedule_id for e in kinds(events, "dispatched")] == ["good"]
    (error,) = kinds(events, "error")
    assert error.schedule_id == "bad" and "phone:gone" in error.detail["reason"]
    assert sched.state.schedules["bad"].status == "failed"
    assert sched.state.states["bad"].next_due is None
    assert "phone:gone" in sched.state.states["bad"].error
    assert "bad" in sched.take_changes().schedules  # saved as failed
    farm.finish(sched, farm.started[0].id)
    clock.advance(60)
    events = await sched.tick()
    assert [e.schedule_id for e in kinds(events, "fired")] == ["good"]
    assert not kinds(events, "error")
    back = msgspec.json.decode(msgspec.json.encode(sched.state), type=SchedulerState)
    assert back.schedules["bad"].status == "failed"


async def test_an_immediate_schedule_completes_only_when_its_jobs_ended() -> None:
    clock = Clock()
    farm = Farm({"phone:a": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="now", sequence="q", target="phone:a", type="immediate"))
    await sched.tick()
    assert sched.state.states["now"].next_due is None  # it fires no more ...
    assert sched.state.schedules["now"].status == "active"  # ... but its job runs
    clock.advance(1)
    await sched.tick()
    assert sched.state.schedules["now"].status == "active"
    farm.finish(sched, farm.started[0].id)
    sched.take_changes()
    await sched.tick()
    assert sched.state.schedules["now"].status == "completed"
    assert "now" in sched.take_changes().schedules


async def test_a_window_is_planned_once_per_schedule(monkeypatch) -> None:
    """A window's times are drawn once and kept: not again for every next occurrence (the
    misfire walk over a half-past window of N times drew the whole window N times)."""
    import actors.coordinator.scheduling.scheduler as core

    calls: list[int] = []
    real = core.plan_window

    def counting(start, end, count, rng, min_gap_s=60.0):
        calls.append(count)
        return real(start, end, count, rng, min_gap_s)

    monkeypatch.setattr(core, "plan_window", counting)
    clock = Clock(T0 + timedelta(minutes=7, seconds=13))  # a start no other test plans
    farm = Farm({"p": [("a", None)]})
    sched = make(farm, clock, stagger_s=0)
    start = clock.now - timedelta(hours=1)
    sched.add(Schedule(id="w", sequence="q", target="p", type="window", window_start=start,
                       window_end=start + timedelta(hours=2), count=100, seed=3))
    while sched.state.states["w"].next_due is not None:
        await sched.tick()
        for job_id in list(farm.running.values()):
            farm.finish(sched, job_id)
        clock.advance(30)
    assert sched.state.states["w"].fired == 51  # the latest past one run late, then 50
    assert calls == [100]


async def test_a_long_pause_still_runs_the_latest_occurrence_within_grace() -> None:
    """The latest missed occurrence is found directly, not by stepping through every missed
    one (a per-minute cron paused for a month stepped 20,000 times and then gave up)."""
    clock = Clock()
    farm = Farm({"p": [("a", None)]})
    sched = make(farm, clock)
    sched.add(Schedule(id="m", sequence="q", target="p", type="recurring", cron="* * * * *",
                       misfire=Misfire(grace_s=3600)))
    sched.pause("m")
    clock.now = T0 + timedelta(days=30, seconds=10)
    sched.resume("m")
    events = await sched.tick()
    (fired,) = kinds(events, "fired")
    assert fired.detail["occurrence"] == (T0 + timedelta(days=30)).isoformat()
    (mis,) = kinds(events, "misfire")
    assert mis.detail["action"] == "run_late"
