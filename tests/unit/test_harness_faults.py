"""The harness's fault scripts (tests/harness/faults.py, issue 22.2) without any farm: a good
script parses to the faults it says; each kind of bad input is refused naming the file, the
line, the fault and the field; a random script is the same for a seed and covers every
kind over a long run; the runner refuses what a farm cannot take before starting anything."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from actors.store.execution_records import utc_text
from tests.harness.faults import (
    KINDS, Fault, FaultRunner, ScriptError, Timeline, completed_since, load_script,
    parse_duration, random_script)

RACKS = ["rack1", "rack2"]

GOOD = """\
# A scripted scenario: every kind once.
[[fault]]
at = "30s"
kind = "node_kill"
target = "rack1"
for = "5s"

[[fault]]
at = "1m"
kind = "loss"
target = "rack2"
for = "1m"
params = { percent = 5 }

[[fault]]
at = "10s"
kind = "coordinator_kill"

[[fault]]
at = "2.5m"
kind = "unplug_storm"
[fault.params]
phones = 4
repeat = 3
every_s = "10s"

[[fault]]
at = 200
kind = "slow"
target = "rack1"
params = { ms = 30000, phones = 2 }

[[fault]]
at = "4m"
kind = "partition"
target = "rack2"

[[fault]]
at = "5m"
kind = "adb_kill"
target = "rack1"
for = "500ms"

[[fault]]
at = "6m"
kind = "disk_full"
for = "20s"

[[fault]]
at = "7m"
kind = "clock_skew"
target = "rack2"
params = { seconds = -300 }

[[fault]]
at = "8m"
kind = "delay"
target = "rack1"
params = { ms = 50, jitter_ms = 200 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "script.toml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str, **kw) -> ScriptError:
    path = write(tmp_path, text)
    with pytest.raises(ScriptError) as info:
        load_script(path, racks=RACKS, **kw)
    err = info.value
    assert err.file == str(path) and str(path) in str(err)
    return err


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth - 1]


def test_a_good_script_parses_to_its_faults_in_time_order(tmp_path):
    faults = load_script(write(tmp_path, GOOD), racks=RACKS)
    assert [(f.at_s, f.kind, f.target, f.duration_s, f.params) for f in faults] == [
        (10.0, "coordinator_kill", None, 5.0, {}),
        (30.0, "node_kill", "rack1", 5.0, {}),
        (60.0, "loss", "rack2", 60.0, {"percent": 5}),
        (150.0, "unplug_storm", None, 23.0,
         {"phones": 4, "repeat": 3, "every_s": 10.0, "seconds": 3.0}),
        (200.0, "slow", "rack1", 30.0, {"ms": 30000, "phones": 2}),
        (240.0, "partition", "rack2", 30.0, {}),
        (300.0, "adb_kill", "rack1", 0.5, {}),
        (360.0, "disk_full", None, 20.0, {}),
        (420.0, "clock_skew", "rack2", 60.0, {"seconds": -300}),
        (480.0, "delay", "rack1", 60.0, {"ms": 50, "jitter_ms": 200}),
    ]
    assert {f.kind for f in faults} == set(KINDS)
    # Each remembers where it was written: the line of its [[fault]] and its number.
    loss = next(f for f in faults if f.kind == "loss")
    assert loss.source == (str(tmp_path / "script.toml"), line_of(GOOD, "[[fault]]", 2), 2)
    assert loss.describe() == "loss rack2 percent=5 for 60s"


def test_a_slow_phone_target_is_taken_without_a_rack_list_and_checked_with_serials(tmp_path):
    text = '[[fault]]\nat = "1s"\nkind = "slow"\ntarget = "phone-7"\nparams = { ms = 100 }\n'
    path = write(tmp_path, text)
    assert load_script(path)[0].target == "phone-7"
    assert load_script(path, racks=RACKS, serials=["phone-7"])[0].target == "phone-7"
    err = refusal(tmp_path, text, serials=["phone-1"])
    assert (err.line, err.index, err.field) == (4, 1, "target")


@pytest.mark.parametrize("old, new, needle, index, field, reason", [
    # (replace in GOOD, by, the line the error must name contains, fault, field, reason)
    ('kind = "loss"', 'kind = "los"', 'kind = "los"', 2, "kind", "unknown kind 'los'"),
    ('for = "1m"', 'for = "1x"', 'for = "1x"', 2, "for", "expected a duration"),
    ('at = "1m"', 'at = "-1m"', 'at = "-1m"', 2, "at", "expected a duration"),
    ('at = "1m"', 'at = true', 'at = true', 2, "at", "expected a duration"),
    ('percent = 5', 'percent = 500', 'percent = 500', 2, "params.percent", "1..100"),
    ('percent = 5', 'percent = 2.5', 'percent = 2.5', 2, "params.percent", "an integer"),
    ('percent = 5', 'pct = 5', 'pct = 5', 2, "params.pct", "takes no param 'pct'"),
    ('every_s = "10s"', 'every_s = "soon"', 'every_s = "soon"', 4, "params.every_s",
     "expected a duration"),
    ('target = "rack2"\nfor = "1m"', 'target = "rack9"\nfor = "1m"', 'target = "rack9"', 2,
     "target", "no rack 'rack9'"),
    ('kind = "coordinator_kill"', 'kind = "coordinator_kill"\ntarget = "rack1"',
     'target = "rack1"', 3, "target", "takes no target"),
    ('target = "rack1"\nfor = "5s"', 'for = "5s"', '[[fault]]', 1, "target", "needs a target"),
    ('phones = 4', 'phones = 4\nseconds = 0', 'seconds = 0', 4, "params.seconds", "0.1..3600"),
    ('kind = "unplug_storm"', 'kind = "unplug_storm"\nfor = "1m"', 'for = "1m"', 4, "for",
     "leave 'for' out"),
    # Under [fault.params] a key is a param, whatever its name.
    ('every_s = "10s"', 'every_s = "10s"\nfor = "1m"', 'for = "1m"', 4, "params.for",
     "takes no param 'for'"),
    ('params = { seconds = -300 }', 'params = { seconds = 0 }', 'seconds = 0', 9,
     "params.seconds", "must not be 0"),
    ('params = { seconds = -300 }', '', '[[fault]]', 9, "params.seconds", "needs params.seconds"),
    ('at = "4m"', 'at = "4m"\nwhen = "now"', 'when = "now"', 6, "when", "unknown field"),
    ('kind = "disk_full"\nfor = "20s"', 'kind = "disk_full"\nfor = "2h"', 'for = "2h"', 8,
     "for", "at most 3600"),
    # delay: each param 0..5000 ms, an integer, one of them above 0, a rack.
    ('ms = 50,', 'ms = 6000,', 'ms = 6000', 10, "params.ms", "0..5000"),
    ('jitter_ms = 200', 'jitter_ms = -1', 'jitter_ms = -1', 10, "params.jitter_ms",
     "0..5000"),
    ('ms = 50,', 'ms = 2.5,', 'ms = 2.5', 10, "params.ms", "an integer"),
    ('{ ms = 50, jitter_ms = 200 }', '{ ms = 0, jitter_ms = 0 }', 'ms = 0', 10, "params.ms",
     "above 0"),
    ('params = { ms = 50, jitter_ms = 200 }', 'for = "1m"', '[[fault]]', 10, "params.ms",
     "above 0"),
    ('{ ms = 50, jitter_ms = 200 }', '{ ms = 50, loss = 5 }', 'loss = 5', 10, "params.loss",
     "takes no param 'loss'"),
    ('kind = "delay"\ntarget = "rack1"', 'kind = "delay"', '[[fault]]', 10, "target",
     "needs a target"),
])
def test_each_bad_field_is_refused_naming_file_line_fault_and_field(
        tmp_path, old, new, needle, index, field, reason):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    err = refusal(tmp_path, text)
    # The first line with ``needle`` from the fault's own [[fault]] header on.
    header = line_of(text, "[[fault]]", index)
    lines = text.splitlines()
    expected = next(i + 1 for i in range(header - 1, len(lines)) if needle in lines[i])
    assert (err.line, err.index, err.field) == (expected, index, field), err
    assert reason in err.reason, err
    assert f":{err.line}: fault {index}, field {field!r}: " in str(err)


def test_a_missing_required_field_names_the_fault_header(tmp_path):
    text = GOOD + '\n[[fault]]\nkind = "partition"\ntarget = "rack1"\n'
    err = refusal(tmp_path, text)
    assert (err.line, err.index, err.field, err.reason) == (
        line_of(text, "[[fault]]", 11), 11, "at", "required")
    text = GOOD.replace('kind = "adb_kill"\n', "")
    err = refusal(tmp_path, text)
    assert (err.line, err.index, err.field) == (line_of(text, "[[fault]]", 7), 7, "kind")


def test_whole_script_problems(tmp_path):
    err = refusal(tmp_path, "seed = 3\n" + GOOD)
    assert (err.line, err.index, err.field) == (1, None, "seed")
    assert "unknown top-level key" in err.reason
    err = refusal(tmp_path, "# nothing yet\n")
    assert (err.index, err.field) == (None, "fault") and "no [[fault]]" in err.reason
    err = refusal(tmp_path, '[fault]\nat = "1s"\nkind = "disk_full"\n')
    assert (err.line, err.field) == (1, "fault") and "array of tables" in err.reason
    text = GOOD.replace('at = "4m"', 'at = = "4m"')
    err = refusal(tmp_path, text)
    assert err.line == line_of(text, 'at = = "4m"') and "not valid TOML" in err.reason
    missing = tmp_path / "nope.toml"
    with pytest.raises(ScriptError, match="nope.toml: cannot read the script"):
        load_script(missing)


def test_durations():
    assert [parse_duration(v) for v in ("500ms", "30s", "2m", "1.5m", "1h", 7, 2.5)] == [
        0.5, 30.0, 120.0, 90.0, 3600.0, 7.0, 2.5]
    for bad in ("", "5", "5 days", "-1s", -1, True, None, float("inf")):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_a_random_script_is_the_same_for_a_seed_and_spaced():
    one = random_script(7, RACKS, 10)
    assert one == random_script(7, list(reversed(RACKS)), 10)
    assert one != random_script(8, RACKS, 10)
    assert one, "a 10-minute run has faults"
    assert [f.at_s for f in one] == sorted(f.at_s for f in one)
    assert one[0].at_s >= 20.0
    for before, after in zip(one, one[1:]):
        # One at a time, with at least 20 s to recover between two.
        assert after.at_s >= before.at_s + before.duration_s + 20.0, (before, after)
    assert one[-1].at_s + one[-1].duration_s <= 10 * 60 - 30
    for f in one:
        # Each is a fault a script could have said: the runner's checks take it.
        assert f.target is None or f.target in RACKS
        assert f.source == ("<random seed 7>", 0, one.index(f) + 1)


def test_a_long_random_run_covers_every_kind_and_kinds_can_be_left_out():
    long_run = random_script(3, RACKS, 60)
    assert {f.kind for f in long_run} == set(KINDS)
    # Every kind comes once before any comes twice (a shuffled bag).
    first = [f.kind for f in long_run[:len(KINDS)]]
    assert sorted(first) == sorted(KINDS)
    without = random_script(3, RACKS, 60, kinds=set(KINDS) - {"clock_skew", "disk_full"})
    assert {f.kind for f in without} == set(KINDS) - {"clock_skew", "disk_full"}
    assert random_script(3, RACKS, 0.5) == []
    with pytest.raises(ValueError, match="unknown kinds"):
        random_script(3, RACKS, 10, kinds={"meteor"})


class FakeFarm:
    """Just what FaultRunner reads and calls: racks, the fault primitives (recorded), the
    phones online and the farm database."""

    def __init__(self, db: Path, *, tmpfs: bool = True, skew: bool = True) -> None:
        self.racks = {"rack1": SimpleNamespace(serials=["a1", "a2"]),
                      "rack2": SimpleNamespace(serials=["b1", "b2"])}
        self.coordinator_tmpfs_mb = 16 if tmpfs else None
        self.calls: list[tuple] = []
        self.db = db
        if not skew:
            self.clock_skew_supported = False

    def __getattr__(self, name):
        if name in ("kill_node", "start_node", "kill_coordinator", "start_coordinator",
                    "kill_adb", "start_adb", "partition", "loss", "delay", "unplug", "slow",
                    "fill_disk", "free_disk", "skew_clock"):
            return lambda *args: self.calls.append((name, *args))
        raise AttributeError(name)

    def phones_online(self) -> int:
        return 4

    def db_path(self) -> Path:
        return self.db


def farm_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE executions (serial TEXT, status TEXT, end_time TIMESTAMP)")
    con.commit()
    con.close()
    return path


def test_the_runner_refuses_what_the_farm_cannot_take_before_starting(tmp_path):
    farm = FakeFarm(farm_db(tmp_path / "farm.sqlite3"), skew=False)
    faults = load_script(write(tmp_path, GOOD), racks=RACKS)
    with pytest.raises(ScriptError) as info:
        FaultRunner(farm, faults, Timeline())
    err = info.value
    assert (err.index, err.field) == (9, "kind") and "clock_skew" in err.reason
    assert err.line == line_of(GOOD, "[[fault]]", 9)
    farm = FakeFarm(farm.db, tmpfs=False)
    disk = [f for f in faults if f.kind == "disk_full"]
    with pytest.raises(ScriptError, match="coordinator_tmpfs_mb"):
        FaultRunner(farm, disk, Timeline())
    with pytest.raises(ScriptError, match="no rack 'rack3'"):
        FaultRunner(farm, [Fault(1, "partition", 1, "rack3")], Timeline())
    assert farm.calls == []  # nothing was injected


def test_the_runner_applies_undoes_and_measures_recovery(tmp_path):
    db = farm_db(tmp_path / "farm.sqlite3")
    farm = FakeFarm(db)
    timeline = Timeline()
    faults = [Fault(0.0, "partition", 0.2, "rack2"),
              Fault(0.1, "unplug_storm", 0.0, None,
                    {"phones": 3, "repeat": 2, "every_s": 0.1, "seconds": 0.1})]
    seen: list[tuple[str, float | None]] = []
    backs: list[int] = []
    runner = FaultRunner(farm, faults, timeline, seed=5, recovery_timeout_s=1.5, poll_s=0.05,
                         on_recovered=lambda f, s: seen.append((f.kind, s)),
                         on_phones_back=lambda: backs.append(1))
    runner.start()

    def complete(serials: list[str]) -> None:
        con = sqlite3.connect(db)
        con.executemany("INSERT INTO executions VALUES (?, 'completed', ?)",
                        [(s, utc_text()) for s in serials])
        con.commit()
        con.close()

    time.sleep(0.5)  # both faults ended; nothing completed since: not recovered yet
    complete(["b1", "b2"])
    assert runner.join(5)
    calls = [c[0] for c in farm.calls]
    assert calls.count("partition") == 2 and ("partition", "rack2", True) in farm.calls
    assert ("partition", "rack2", False) in farm.calls
    unplugs = [c for c in farm.calls if c[0] == "unplug"]
    assert len(unplugs) == 2 and all(len(c[1]) == 3 for c in unplugs)
    recoveries = dict((f.kind, s) for f, s in runner.recoveries)
    assert recoveries["partition"] is not None and 0.1 < recoveries["partition"] < 1.5
    # The storm's phones (3 of 4, two draws) did not all complete anything: not recovered.
    stormed = {s for c in unplugs for s in c[1]}
    assert (recoveries["unplug_storm"] is None) == (not stormed <= {"b1", "b2"})
    assert sorted(seen) == sorted(recoveries.items())
    assert backs == [1, 1]  # once per fault, when every phone was online after it
    windows = timeline.windows()
    assert [(w.index, w.kind, w.target) for w in windows] == [
        (1, "partition", "rack2"), (2, "unplug_storm", None)]
    assert all(w.end is not None and w.end >= w.start for w in windows)
    assert windows[0].affected == ("b1", "b2")
    phases = [e.fields["phase"] for e in timeline.entries("fault") if e.fields["index"] == 1]
    assert phases == ["start", "end", "recovered"]
    assert timeline.around(windows[0].start, 0.05)[0].fields["phase"] == "start"

    # The same seed draws the same storm phones again; another seed, others.
    rerun = FaultRunner(FakeFarm(db), faults, Timeline(), seed=5)
    assert rerun._affected(2, faults[1]) == sorted(stormed)
    assert rerun._draws[2] == [sorted(c[1]) for c in unplugs]
    others = set()
    for seed in range(10):
        other = FaultRunner(FakeFarm(db), faults, Timeline(), seed=seed)
        other._affected(2, faults[1])
        others.add(tuple(map(tuple, other._draws[2])))
    assert len(others) > 1


def test_stop_undoes_an_active_fault_at_once(tmp_path):
    farm = FakeFarm(farm_db(tmp_path / "farm.sqlite3"))
    runner = FaultRunner(farm, [Fault(0.0, "loss", 60.0, "rack1", {"percent": 5})],
                         Timeline(), recovery_timeout_s=60)
    runner.start()
    time.sleep(0.2)
    started = time.monotonic()
    runner.stop(timeout=5)
    assert time.monotonic() - started < 2 and runner.done
    assert farm.calls == [("loss", "rack1", 5), ("loss", "rack1", 0)]
    assert runner.recoveries[0][1] is None


def test_a_delay_with_only_one_of_its_params_is_taken_and_the_other_is_0(tmp_path):
    text = '[[fault]]\nat = "1s"\nkind = "delay"\ntarget = "rack2"\nparams = { jitter_ms = 200 }\n'
    [fault] = load_script(write(tmp_path, text), racks=RACKS)
    assert (fault.kind, fault.target, fault.duration_s, fault.params) == (
        "delay", "rack2", 60.0, {"ms": 0, "jitter_ms": 200})
    assert fault.describe() == "delay rack2 jitter_ms=200 ms=0 for 60s"


def test_the_runner_applies_and_undoes_a_delay_and_refuses_one_it_cannot(tmp_path):
    farm = FakeFarm(farm_db(tmp_path / "farm.sqlite3"))
    runner = FaultRunner(farm, [Fault(0.0, "delay", 60.0, "rack1",
                                      {"ms": 50, "jitter_ms": 200})], Timeline(),
                         recovery_timeout_s=60)
    runner.start()
    time.sleep(0.2)
    runner.stop(timeout=5)
    assert farm.calls == [("delay", "rack1", 50, 200), ("delay", "rack1", 0, 0)]
    # Built in code, the same rule as in a script: one of the params above 0.
    with pytest.raises(ScriptError, match="above 0") as info:
        FaultRunner(farm, [Fault(1, "delay", 1, "rack1", {"ms": 0, "jitter_ms": 0})],
                    Timeline())
    assert info.value.field == "params.ms"
    # A farm without delay proxies (no delay method) cannot take one.
    no_proxy = SimpleNamespace(racks=farm.racks, coordinator_tmpfs_mb=None)
    with pytest.raises(ScriptError, match="no delay proxy"):
        FaultRunner(no_proxy, [Fault(1, "delay", 1, "rack1", {"ms": 5, "jitter_ms": 0})],
                    Timeline())
    assert farm.calls[2:] == []  # nothing more was injected


def test_completed_since_reads_the_database_read_only_and_survives_a_missing_one(tmp_path):
    db = farm_db(tmp_path / "farm.sqlite3")
    con = sqlite3.connect(db)
    con.execute("INSERT INTO executions VALUES ('a1', 'completed', ?)", (utc_text(),))
    con.execute("INSERT INTO executions VALUES ('a2', 'failed', ?)", (utc_text(),))
    con.commit()
    con.close()
    assert completed_since(db, time.time() - 60, ["a1", "a2", "b1"]) == {"a1"}
    assert completed_since(db, time.time() + 60, ["a1"]) == set()
    assert completed_since(tmp_path / "none.sqlite3", 0, ["a1"]) == set()


def test_the_load_codes_its_steps_and_records_refused_requests_without_raising(tmp_path):
    from tests.harness.invariants import broadcast_tap, decode_broadcast, decode_tap
    from tests.harness.load import SteadyLoad, load_steps

    steps = load_steps(1234)
    taps = [(i, s) for i, s in enumerate(steps) if s["type"] == "tap"]
    assert [decode_tap(s["x"], s["y"]) for _, s in taps] == [(i, 1234) for i, _ in taps]

    class DownFarm:
        """A farm whose coordinator never answers."""
        posts: list[str] = []

        def post(self, path, body):
            self.posts.append(path)
            return 0, None

        def db_path(self):
            return tmp_path / "coordinator" / "farm.sqlite3"

    timeline = Timeline()
    load = SteadyLoad(DownFarm(), timeline, broadcast_every_s=0.05, run_every_s=0.05,
                      tick_s=0.01)
    load.start()
    time.sleep(0.3)
    load.kick()
    load.stop()
    assert load.sequence_file().exists() and not load.schedule_created
    requests = timeline.entries("request")
    assert requests and {e.fields["status"] for e in requests} == {0}
    paths = {e.fields["path"] for e in requests}
    assert paths == {"/api/schedules", "/api/actions", "/api/runs"}
    numbers = [e.fields["n"] for e in requests if e.fields["path"] == "/api/actions"]
    assert numbers == list(range(len(numbers)))
    assert decode_broadcast(*broadcast_tap(numbers[-1])) == numbers[-1]
    assert load.completed_per_minute(60) == 0.0  # no database: nothing, no error
