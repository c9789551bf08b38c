"""Crash recovery of a workflow (spec 12.3.1) with real processes: a coordinator, a node with
its own adb server and 4 virtual phones in a `farm-virtual` process. A two-sequence workflow
runs on the 4 phones; the coordinator is killed with SIGKILL while the first sequence is
playing on all of them. After a restart the interrupted workflow execution is found, each
phone's first sequence ends where it stood (the node played on and journaled it), the
workflow proceeds to its second sequence, and no tap reaches a phone twice (checked on the
phones themselves with `vphone log`). Then the same with the node killed: the first sequence
resumes from the step after its last successful one when the node returns."""

from __future__ import annotations

import json
import signal
import time
import urllib.error

import pytest

from tests.e2e.test_farm_processes import Farm, taps, wait

FIRST_X = list(range(100, 110))   # the first sequence taps these x at y=2000
SECOND_X = list(range(200, 203))  # the second at y=2100


def _slow_taps(name: str, xs: list[int], y: int) -> dict:
    steps: list[dict] = []
    for x in xs:
        steps += [{"type": "tap", "x": x, "y": y}, {"type": "sleep", "seconds": 0.5}]
    return {"name": name, "steps": steps}


@pytest.fixture(scope="module")
def farm(tmp_path_factory, module_engine) -> Farm:
    """The farm, once per database engine: crash recovery on SQLite and on PostgreSQL."""
    f = Farm(tmp_path_factory.mktemp("wfcrash"))
    library = f.data / "coordinator" / "sequences" / "crash"
    library.mkdir(parents=True)
    (library / "first.json").write_text(json.dumps(_slow_taps("first", FIRST_X, 2000)))
    (library / "second.json").write_text(json.dumps(_slow_taps("second", SECOND_X, 2100)))
    try:
        f.start_coordinator()
        f.add_rack("rack1", 4)
        wait(lambda: sum(p["state"] == "online" for p in f.phones().values()) == 4, 60,
             "4 phones online")
        yield f
    finally:
        f.stop()


def define_crashy(farm: Farm) -> None:
    """The two sequences and the workflow "crashy" (once per farm: a repeat answers 409)."""
    for path, body in (("/api/sequences", {"name": "crash/first"}),
                       ("/api/sequences", {"name": "crash/second"}),
                       ("/api/workflows", {"name": "crashy", "sequences": [
                           {"sequence": "crash/first"},
                           {"sequence": "crash/second", "depends_on": [0]}]})):
        try:
            farm.post(path, body)
        except urllib.error.HTTPError as exc:
            assert exc.code == 409, exc.read()


def start_crashy_mid_first_sequence(farm, serials: list[str], min_taps: int) -> tuple[dict, str]:
    """Run the crashy workflow on every phone and return (taps before it, its execution id)
    once its first sequence is playing on all of them and each phone took more than
    ``min_taps`` of its taps (so a kill lands mid-sequence)."""
    before = {s: len(taps(farm, s)) for s in serials}
    define_crashy(farm)
    started = farm.post("/api/workflows/crashy/run", {"scope": "phone:all"})
    wfx = started["workflow_execution_id"]

    def first_playing_everywhere() -> bool:
        view = farm.get(f"/api/workflow-executions/{wfx}") or {"sequences": []}
        running = {s["serial"] for s in view["sequences"]
                   if s["position"] == 0 and s["status"] == "running"}
        return running == set(serials) and all(
            len(taps(farm, s)) > before[s] + min_taps for s in serials)

    wait(first_playing_everywhere, 60, "the first sequence playing on all 4 phones")
    return before, wfx


def wait_workflow_completed(farm, wfx: str, what: str) -> dict:
    view = wait(lambda: (v := farm.get(f"/api/workflow-executions/{wfx}"))
                and v["status"] not in ("pending", "running") and v, 150, what)
    assert view["status"] == "completed", view
    return view


def sequence_taps(farm, serial: str, before: dict) -> tuple[list, list, list]:
    """(this workflow's taps, x of the first sequence's, x of the second's) on ``serial``."""
    mine = taps(farm, serial)[before[serial]:]
    return (mine, [t["x"] for t in mine if t["y"] == 2000],
            [t["x"] for t in mine if t["y"] == 2100])


def test_coordinator_kill_9_mid_workflow_on_4_phones_resumes_and_proceeds(farm):
    serials = farm.serials["rack1"]
    before, wfx = start_crashy_mid_first_sequence(farm, serials, min_taps=0)
    farm.coordinator.send_signal(signal.SIGKILL)
    farm.coordinator.wait()
    killed_at = {s: len(taps(farm, s)) - before[s] for s in serials}
    time.sleep(1.5)  # the phones play on, journaled on the node
    farm.start_coordinator()

    view = wait_workflow_completed(farm, wfx, "the workflow to end after the restart")
    assert sorted((s["position"], s["serial"], s["status"]) for s in view["sequences"]) == \
        sorted((p, s, "completed") for p in (0, 1) for s in serials)
    log = (farm.data / "coordinator.log").read_text()
    assert f"execution={wfx} interrupted by a coordinator restart" in log
    for serial in serials:
        mine, first, second = sequence_taps(farm, serial, before)
        assert first == FIRST_X, (serial, killed_at[serial], first)    # each once, in order
        assert second == SECOND_X, (serial, second)
        last_first = max(i for i, t in enumerate(mine) if t["y"] == 2000)
        first_second = min(i for i, t in enumerate(mine) if t["y"] == 2100)
        assert last_first < first_second  # the second sequence ran after the first
        # Each sequence execution ran once: no execution was started twice for a phone.
        ids = [s["execution_ids"] for s in view["sequences"] if s["serial"] == serial]
        assert all(len(x) == 1 for x in ids), ids
    assert any(0 < n < len(FIRST_X) for n in killed_at.values()), killed_at


def test_node_kill_9_mid_workflow_resumes_when_it_returns_and_proceeds(farm):
    """The rack computer dies mid-workflow: each phone's first sequence resumes from the step
    after its last successful one when the node is back, then the second sequence runs."""
    serials = farm.serials["rack1"]
    before, wfx = start_crashy_mid_first_sequence(farm, serials, min_taps=1)
    farm.nodes["rack1"].send_signal(signal.SIGKILL)
    farm.nodes["rack1"].wait()
    time.sleep(1.0)
    farm.start_node("rack1")
    wait_workflow_completed(farm, wfx, "the workflow to end after the node came back")
    for serial in serials:
        _, first, second = sequence_taps(farm, serial, before)
        assert sorted(set(first)) == FIRST_X, (serial, first)  # every tap arrived
        # At most the tap in flight at the kill may have been played twice; none other.
        assert len(first) - len(set(first)) <= 1, (serial, first)
        assert second == SECOND_X, (serial, second)
