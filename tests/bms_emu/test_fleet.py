"""`bms-emu fleet`: N packs, each a `bms-emu run` process, against a real Mosquitto broker.

The fleet runs as a child process here (it forks its packs, which a pytest process should
not do to itself); what the packs published is read back from the broker: each pack's
retained state and availability."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import aiomqtt
import pytest

from bms_emu import batch_run, fleet_cmd
from bms_emu.main import build_parser, main
from tests.support.mqtt_broker import Broker, free_port, require_mosquitto

ROOT = Path(__file__).resolve().parents[2]


def fleet(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bms_emu.main", "fleet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, **kw)


def retained(port: int, kind: str, n: int, wait_s: float = 5.0) -> dict[str, bytes]:
    """The retained `bms/<pack>/<kind>` payloads, by pack id (at least n, or what came in
    wait_s)."""

    async def read() -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-fleet-{kind}") as client:
            await client.subscribe(f"bms/+/{kind}", qos=1)
            try:
                async with asyncio.timeout(wait_s):
                    async for message in client.messages:
                        found[message.topic.value.split("/")[1]] = bytes(message.payload)
                        if len(found) >= n:
                            break
            except TimeoutError:
                pass
        return found

    return asyncio.run(read())


def test_each_pack_publishes_its_own_retained_state_and_all_exit_0(mqtt_broker):
    p = fleet("--packs", "3", "--series", "8", "--duration", "3", "--mqtt", mqtt_broker.url,
              "--pack-prefix", "site")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines if "started" in line] == [
        "pack site-1 started", "pack site-2 started", "pack site-3 started"]
    assert sum(" done: 3 s simulated" in line for line in lines) == 3, out

    states = {k: json.loads(v) for k, v in retained(mqtt_broker.port, "state", 3).items()}
    assert set(states) == {"site-1", "site-2", "site-3"}
    assert all(s["pack_id"] == k for k, s in states.items())
    # Different seeds: different cell spreads and noise, so different cells.
    cells = {(s["cell_v_min"], s["cell_v_max"], s["pack_voltage_v"]) for s in states.values()}
    assert len(cells) == 3, states
    assert retained(mqtt_broker.port, "availability", 3) == dict.fromkeys(states, b"offline")



def online(p: subprocess.Popen, broker: Broker, ids: set[str]) -> None:
    """Until every pack in `ids` says it is online (the fleet still running)."""
    deadline = time.monotonic() + 30
    while retained(broker.port, "availability", len(ids), wait_s=0.5) != dict.fromkeys(
            ids, b"online"):
        assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()


def sigterm_once_online_then_all_offline(p: subprocess.Popen, broker: Broker,
                                         ids: set[str]) -> None:
    """SIGTERM to the fleet once every pack in `ids` is online: it exits 143 as `run` does
    (128 + SIGTERM), says each pack stopped and that it was interrupted, and each pack's
    retained availability is `offline`."""
    try:
        online(p, broker, ids)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err
    # Each with its figures so far, or (SIGTERM came as soon as they were online) before
    # its staggered first step.
    assert out.count(" stopped") == len(ids), out
    assert "bms-emu fleet: interrupted by SIGTERM: " in err
    assert retained(broker.port, "availability", len(ids)) == dict.fromkeys(ids, b"offline")

def test_sigterm_stops_every_pack_cleanly_each_saying_offline(mqtt_broker):
    p = fleet("--packs", "2", "--series", "8", "--duration", "1h", "--mqtt", mqtt_broker.url,
              "--pack-prefix", "st")
    sigterm_once_online_then_all_offline(p, mqtt_broker, {"st-1", "st-2"})
    log = mqtt_broker.log_path.read_text()
    assert "Received DISCONNECT from bms-emu-st-1" in log  # a clean stop, not the will
    assert "Received DISCONNECT from bms-emu-st-2" in log


def test_a_pack_that_fails_is_named_with_its_error_output(mqtt_broker, tmp_path):
    (tmp_path / "run-f-2.csv").mkdir()  # pack 2 cannot write its record: a directory is there
    p = fleet("--packs", "3", "--series", "8", "--duration", "1", "--mqtt", mqtt_broker.url,
              "--pack-prefix", "f", "--record", str(tmp_path / "run.csv"))
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert "pack f-2 (pid" in err and "exited with 2" in err
    assert "run-f-2.csv': is a directory: give a file name" in err  # checked before its run
    assert "Traceback" not in err
    assert "f-1 (pid" not in err and "f-3 (pid" not in err
    assert err.strip().endswith("1 of 3 pack(s) failed: f-2")
    assert (tmp_path / "run-f-1.csv").is_file() and (tmp_path / "run-f-3.csv").is_file()


@pytest.mark.parametrize("packs", ["0", "1001", "-3"])
def test_a_bad_number_of_packs_is_refused_naming_it(packs, capsys):
    assert main(["fleet", "--packs", packs, "--mqtt", "mqtt://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert f"--packs = {int(packs)}: must be within [1, 1000]" in err


def test_packs_that_are_not_a_number_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fleet", "--packs", "many", "--mqtt", "mqtt://127.0.0.1:1"])
    assert exit_.value.code == 2
    assert "--packs: invalid int value: 'many'" in capsys.readouterr().err


def test_every_bad_option_is_named_at_once_before_any_pack_starts(capsys):
    code = main(["fleet", "--packs", "2", "--speed", "fast", "--pack-id", "x",
                 "--pack-prefix", "a/b"])
    assert code == 2
    err = capsys.readouterr().err
    for says in ("--speed = 'fast'", "--pack-id = 'x'", "--pack-prefix = 'a/b'",
                 "--mqtt: a fleet publishes over MQTT: give --mqtt URL"):
        assert says in err


def test_the_run_options_reach_each_pack_as_run_would_read_them():
    args = build_parser().parse_args([
        "fleet", "--packs", "2", "--mqtt", "mqtt://h:1/site", "--series", "32",
        "--ambient-c", "-10", "--inject", "5s:sense-open:cell=3", "--inject",
        "9s:precharge-open", "--no-ha-discovery", "--seed", "7", "--speed", "max",
        "--state-period", "0.5", "--record", "/tmp/r.csv", "--pack-prefix", "p"])
    run_args = args.run_parser.parse_args(fleet_cmd.run_argv(args, "p-2", 8))
    assert (run_args.pack_id, run_args.seed, run_args.speed, run_args.json) == (
        "p-2", 8, "max", True)
    assert (run_args.series, run_args.ambient_c, run_args.state_period) == (32, -10.0, 0.5)
    assert run_args.inject == ["5s:sense-open:cell=3", "9s:precharge-open"]
    assert run_args.ha_discovery is False
    assert run_args.mqtt == "mqtt://h:1/site"
    assert run_args.record == "/tmp/r-p-2.csv"
    assert build_parser().parse_args(["fleet", "--packs", "1"]).speed == "1"  # real time


def test_the_benchmark_quick_run_loses_nothing():
    require_mosquitto()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mqtt_fleet.py"),
                           "--quick"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    out = json.loads(lines[0])
    assert out["benchmark"] == "mqtt_fleet"
    (run,) = out["runs"]
    assert (run["packs"], run["packs_seen"], run["fleet_exit"], run["packs_exit_0"]) == (
        2, 2, 0, 2)
    assert run["lost"] == 0 and run["state_tail_lost"] == 0
    assert run["received"] > 0 and run["latency_ms"]["p99"] >= run["latency_ms"]["p50"] >= 0
    assert isinstance(run["goal_met"], bool)


def started_pids(out: str) -> dict[str, str]:
    """pack id -> pid, from the `pack X started: pid P, seed S` lines."""
    return {line.split()[1]: line.split("pid ")[1].split(",")[0]
            for line in out.splitlines() if " started: pid " in line}


def test_a_batch_steps_several_packs_in_one_process_with_one_session(mqtt_broker):
    p = fleet("--packs", "5", "--packs-per-process", "3", "--series", "8", "--duration", "3",
              "--mqtt", mqtt_broker.url, "--pack-prefix", "bt")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    pids = started_pids(out)
    assert list(pids) == [f"bt-{k}" for k in range(1, 6)]
    assert pids["bt-1"] == pids["bt-2"] == pids["bt-3"] != pids["bt-4"] == pids["bt-5"]
    assert sum(" done: 3 s simulated" in line for line in out.splitlines()) == 5, out
    states = {k: json.loads(v) for k, v in retained(mqtt_broker.port, "state", 5).items()}
    assert set(states) == set(pids) and all(s["pack_id"] == k for k, s in states.items())
    assert len({(s["cell_v_min"], s["cell_v_max"]) for s in states.values()}) == 5
    assert retained(mqtt_broker.port, "availability", 5) == dict.fromkeys(pids, b"offline")
    log = mqtt_broker.log_path.read_text()
    assert "Received DISCONNECT from bms-emu-batch-bt-1..bt-3" in log  # clean, not the will
    assert "Received DISCONNECT from bms-emu-batch-bt-4..bt-5" in log


def test_sigterm_stops_a_batch_cleanly_each_pack_saying_offline(mqtt_broker):
    p = fleet("--packs", "3", "--packs-per-process", "3", "--series", "8", "--duration", "1h",
              "--mqtt", mqtt_broker.url, "--pack-prefix", "bs")
    sigterm_once_online_then_all_offline(p, mqtt_broker, {"bs-1", "bs-2", "bs-3"})
    assert "Received DISCONNECT from bms-emu-batch-bs-1..bs-3" in mqtt_broker.log_path.read_text()


def test_a_pack_that_fails_in_a_batch_is_named_and_the_others_run(mqtt_broker, tmp_path):
    (tmp_path / "run-g-2.csv").mkdir()  # pack 2 cannot write its record
    p = fleet("--packs", "3", "--packs-per-process", "3", "--series", "8", "--duration", "1",
              "--mqtt", mqtt_broker.url, "--pack-prefix", "g", "--record",
              str(tmp_path / "run.csv"))
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert "pack g-2 (pid" in err and "exited with 2" in err
    assert "run-g-2.csv': is a directory: give a file name" in err
    assert "Traceback" not in err
    assert err.strip().endswith("1 of 3 pack(s) failed: g-2")
    assert "pack g-1 done: 1 s simulated" in out and "pack g-3 done: 1 s simulated" in out
    assert (tmp_path / "run-g-1.csv").is_file() and (tmp_path / "run-g-3.csv").is_file()


def test_a_shard_runs_its_share_with_the_ids_and_seeds_the_whole_fleet_gives(mqtt_broker):
    p = fleet("--packs", "5", "--shard", "2/2", "--series", "8", "--duration", "1",
              "--mqtt", mqtt_broker.url, "--pack-prefix", "sh", "--seed", "10", "--json")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    started = [json.loads(line) for line in out.splitlines() if '"started"' in line]
    assert [(e["pack_id"], e["seed"]) for e in started] == [
        ("sh-3", 12), ("sh-4", 13), ("sh-5", 14)]
    assert set(retained(mqtt_broker.port, "state", 3)) == {"sh-3", "sh-4", "sh-5"}


@pytest.mark.parametrize(("packs", "hosts"), [(5, 2), (7, 3), (1000, 7), (4, 4)])
def test_the_shards_of_a_fleet_cover_every_pack_once_each_a_contiguous_share(packs, hosts):
    shares = [fleet_cmd.shard_range(f"{k}/{hosts}", packs) for k in range(1, hosts + 1)]
    assert [n for share in shares for n in share] == list(range(1, packs + 1))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize(("shard", "says"), [
    ("0/2", "--shard = '0/2': K must be within [1, N = 2]"),
    ("3/2", "--shard = '3/2': K must be within [1, N = 2]"),
    ("x/y", "--shard = 'x/y': must be K/N with whole numbers"),
    ("1/0", "--shard = '1/0': N must be within [1, --packs = 4]"),
    ("1/5", "--shard = '1/5': N must be within [1, --packs = 4]"),
])
def test_a_bad_shard_is_refused_naming_it(shard, says, capsys):
    assert main(["fleet", "--packs", "4", "--shard", shard, "--mqtt", "mqtt://127.0.0.1:1"]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(("value", "says"), [
    ("0", "--packs-per-process = '0': must be 'auto' or within [1, 1000]"),
    ("some", "--packs-per-process = 'some': must be 'auto' or a whole number")])
def test_a_bad_packs_per_process_is_refused_naming_it(value, says, capsys):
    assert main(["fleet", "--packs", "4", "--packs-per-process", value,
                 "--mqtt", "mqtt://127.0.0.1:1"]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(("packs", "cores", "expected"), [(500, 2, 50), (100, 2, 50),
                                                         (3, 2, 2), (1, 8, 1), (9, 4, 3)])
def test_auto_makes_as_many_processes_as_cores_of_50_packs_at_most(packs, cores, expected):
    assert fleet_cmd.packs_per_process("auto", packs, cores) == expected


def test_the_batch_processes_take_phases_spread_over_the_tick(monkeypatch, tmp_path):
    """Each batch process starts its ticks at its own phase, the share of the host's packs
    before its first, so the fleet's processes do not all wake and send at once."""
    forked = []
    monkeypatch.setattr(fleet_cmd, "_fork", lambda a, group, workdir, gate, phase: forked.append(
        ([c.pack_id for c in group], phase)))
    args = build_parser().parse_args(["fleet", "--packs", "12", "--packs-per-process", "3",
                                      "--shard", "2/2", "--pack-prefix", "p"])
    fleet_cmd.Fleet(args, tmp_path).start_all()
    assert forked == [(["p-7", "p-8", "p-9"], 0.0), (["p-10", "p-11", "p-12"], 0.5)]


@pytest.mark.parametrize(("speed", "phase", "delay_s"), [("1", 0.5, 0.05), ("2", 0.25, 0.0125)])
def test_a_batch_starts_its_ticks_its_phase_of_a_tick_after_the_gate(speed, phase, delay_s,
                                                                     monkeypatch, tmp_path):
    """`run_packs` waits `tick_phase` of a (paced) tick before its first: 0.1 s ticks."""
    waits = []
    monkeypatch.setattr(batch_run, "sleep_until", lambda wall_s, stop: waits.append(wall_s))
    monkeypatch.setattr(batch_run, "time", SimpleNamespace(perf_counter=lambda: 100.0))
    args = build_parser().parse_args(["fleet", "--packs", "2", "--series", "4", "--speed",
                                      speed, "--duration", "0.3"])
    slots = [batch_run.Slot(fleet_cmd.run_argv(args, f"p-{k}", k), tmp_path / f"{k}.out",
                            tmp_path / f"{k}.err", tmp_path / f"{k}.code") for k in (1, 2)]
    assert batch_run.run_packs(args.run_parser, slots, "b", tick_phase=phase) == 0
    assert waits == [pytest.approx(100.0 + delay_s, abs=1e-12)]


def readme_bridge_conf(central_port: int) -> str:
    """The README's bridge.conf for host 2, pointed at the central broker on this machine."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("# /etc/mosquitto/conf.d/bridge.conf on host 2")[1].split("```")[0]
    conf = block.split("\n", 1)[1]  # after the comment line
    assert "address central.example:1883" in conf
    return conf.replace("central.example:1883", f"127.0.0.1:{central_port}")


def command_result(port: int, pack_id: str, command: dict, wait_s: float = 15.0) -> dict:
    """Sends `command` to `bms/<pack_id>/cmd/state` on the broker at `port` (again each
    second, as a host whose first try may beat the bridge's subscription does) and returns
    the first result read back there."""

    async def ask() -> dict:
        async with aiomqtt.Client("127.0.0.1", port, identifier="test-bridge-host") as client:
            await client.subscribe(f"bms/{pack_id}/cmd/state/result", qos=1)
            async with asyncio.timeout(wait_s):
                while True:
                    await client.publish(f"bms/{pack_id}/cmd/state", json.dumps(command), qos=1)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            async for message in client.messages:
                                return json.loads(message.payload)

    try:
        return asyncio.run(ask())
    except TimeoutError:
        pytest.fail(f"no result to {command} for {pack_id} came in {wait_s:g} s")


def test_the_readmes_two_host_layout_puts_both_shards_on_the_central_broker(
        mqtt_broker_factory):
    """Host 1 on the central broker, host 2 on a broker of its own bridged to it with the
    README's bridge.conf: the central broker sees every pack, and a host's command there
    reaches a pack behind the bridge and is answered."""
    central = mqtt_broker_factory()
    edge = mqtt_broker_factory(extra_config=readme_bridge_conf(central.port))
    shared = ("--packs", "4", "--series", "8", "--duration", "1h", "--pack-prefix", "br",
              "--mqtt-commands", "state=run|standby")
    host1 = fleet(*shared, "--shard", "1/2", "--mqtt", central.url)
    host2 = fleet(*shared, "--shard", "2/2", "--mqtt", edge.url)
    try:
        states = retained(central.port, "state", 4, wait_s=30)
        assert set(states) == {"br-1", "br-2", "br-3", "br-4"}, (host1.poll(), host2.poll())
        assert all(json.loads(s)["pack_id"] == k for k, s in states.items())
        result = command_result(central.port, "br-4", {"id": 7, "state": "standby"})
        assert (result["id"], result["ok"]) == (7, True), result
    finally:
        for host in (host1, host2):
            host.send_signal(signal.SIGTERM)
        outs = [host.communicate(timeout=30) for host in (host1, host2)]
    assert [host.returncode for host in (host1, host2)] == [128 + signal.SIGTERM] * 2, outs
    # Host 2's packs said `offline` on its own broker, and the bridge carried it on.
    assert retained(central.port, "availability", 4) == dict.fromkeys(states, b"offline")


def test_a_batch_whose_packs_all_fail_does_not_hold_the_others_at_the_start_gate(
        mqtt_broker, tmp_path):
    """The fleet's processes start their clocks together, once each is ready or has ended
    (`bms_emu.start_gate`): a process none of whose packs could be built ends before it is
    ready, and the other process's packs still run."""
    for k in (1, 2):
        (tmp_path / f"run-gf-{k}.csv").mkdir()  # packs 1 and 2 cannot write their records
    p = fleet("--packs", "4", "--packs-per-process", "2", "--series", "8", "--duration", "1",
              "--mqtt", mqtt_broker.url, "--pack-prefix", "gf", "--record",
              str(tmp_path / "run.csv"))
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert err.strip().endswith("2 of 4 pack(s) failed: gf-1, gf-2"), err
    assert "pack gf-3 done: 1 s simulated" in out and "pack gf-4 done: 1 s simulated" in out


# --- interrupted -----------------------------------------------------------------------------


def test_an_interrupted_fleet_keeps_each_packs_summary_so_far_in_its_json(mqtt_broker):
    """Ctrl-C: exit 130, and each pack's JSON event carries its summary so far, marked
    interrupted by the fleet's signal (forwarded to the packs as it came), as `run`'s."""
    ids = {"js-1", "js-2", "js-3"}
    p = fleet("--packs", "3", "--packs-per-process", "2", "--series", "8", "--duration", "1h",
              "--speed", "1", "--mqtt", mqtt_broker.url, "--pack-prefix", "js", "--json")
    try:
        online(p, mqtt_broker, ids)
        time.sleep(1.5)  # every pack past its staggered first step
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGINT, err
    ends = {e["pack_id"]: e for e in map(json.loads, out.splitlines())
            if e["event"] != "started"}
    assert set(ends) == ids, out
    for e in ends.values():
        assert (e["event"], e["returncode"]) == ("stopped", 128 + signal.SIGINT), e
        assert e["summary"]["interrupted"] == "SIGINT" and e["summary"]["sim_s"] > 0, e
    assert err.strip() == ("bms-emu fleet: interrupted by SIGINT: 3 of 3 pack(s) stopped "
                           "early (their summaries are of the run so far)")


def test_a_second_stop_signal_kills_what_still_runs_as_asked_not_as_failures(mqtt_broker,
                                                                             tmp_path):
    """A second Ctrl-C while the packs stop (each drawing its --plot, which takes a while):
    they are killed; that is what the user asked, so the fleet exits 130 naming them killed,
    and reports no pack failed."""
    p = fleet("--packs", "4", "--packs-per-process", "2", "--series", "8", "--duration",
              "1h", "--speed", "1", "--mqtt", mqtt_broker.url, "--pack-prefix", "tw",
              "--plot", str(tmp_path / "run.png"))
    try:
        online(p, mqtt_broker, {"tw-1", "tw-2", "tw-3", "tw-4"})
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGINT, err
    assert "failed" not in err, err
    ended = [line.split()[1] for line in out.splitlines()
             if " stopped" in line or " killed by a second stop signal" in line]
    assert sorted(ended) == ["tw-1", "tw-2", "tw-3", "tw-4"], out
    assert "killed by a second stop signal" in out, out
    assert "bms-emu fleet: interrupted by SIGINT: " in err


def test_a_pack_killed_by_the_second_signal_is_killed_one_past_its_grace_failed(tmp_path):
    """How the fleet tells the packs it killed apart: after a second stop signal, as asked;
    after STOP_GRACE_S without stopping, a failure (exit 1)."""
    args = SimpleNamespace(json=False, quiet=False, shard="1/1", packs=2)
    fleet_ = fleet_cmd.Fleet(args, tmp_path)
    fleet_.children = [fleet_cmd.Child(k, f"k-{k}", k - 1, tmp_path / f"{k}.out",
                                       tmp_path / f"{k}.err") for k in (1, 2)]
    fleet_.stop_signum, fleet_.stop_sent_at = signal.SIGTERM, 0.0
    fleet_.killed = fleet_cmd.SECOND_SIGNAL
    fleet_.children[0].returncode = -signal.SIGKILL
    fleet_._ended(fleet_.children[0])
    fleet_.killed = f"{fleet_cmd.STOP_GRACE_S:g} s without stopping"
    fleet_.children[1].returncode = -signal.SIGKILL
    fleet_._ended(fleet_.children[1])
    assert [c.pack_id for c in fleet_.cut_short] == ["k-1"]
    assert [c.pack_id for c in fleet_.failed] == ["k-2"]
    assert fleet_.exit_code() == 1
    fleet_.failed.clear()
    assert fleet_.exit_code() == 128 + signal.SIGTERM


def stderr_line(p: subprocess.Popen, says: str, wait_s: float = 30.0, stdout: bool = False
                ) -> str:
    """The first line of the running fleet's stderr (or stdout) that has `says` in it.

    Read a byte at a time from the descriptor: a buffered readline could take the next
    lines along, and `communicate` (which reads the descriptors) would never see them."""
    fd = (p.stdout if stdout else p.stderr).fileno()
    deadline = time.monotonic() + wait_s
    line = b""
    while time.monotonic() < deadline and p.poll() is None:
        if select.select([fd], [], [], 0.5)[0]:
            byte = os.read(fd, 1)
            line += byte
            if byte in (b"\n", b""):
                if says in line.decode():
                    return line.decode()
                line = b""
    pytest.fail(f"the fleet never said {says!r} while it ran")


def test_the_interrupted_line_tells_packs_stopped_with_a_summary_from_those_without(
        tmp_path, capsys):
    """Stopped before its staggered first step, a pack has no summary: the line says so
    instead of counting it among the summaries so far; and a failed pack's JSON event
    carries its summary when it wrote one (exit 4: it ran, its broker never answered)."""
    summary = {"sim_s": 2.0, "wall_s": 2.0, "rtf": 1.0, "interrupted": "SIGINT",
               "final": {"state": "RUN", "soc_pct": 50.0}}
    args = SimpleNamespace(json=True, quiet=False, shard="1/1", packs=3)
    fleet_ = fleet_cmd.Fleet(args, tmp_path)
    fleet_.children = [fleet_cmd.Child(k, f"s-{k}", k - 1, tmp_path / f"{k}.out",
                                       tmp_path / f"{k}.err") for k in (1, 2, 3)]
    for k in (1, 3):
        (tmp_path / f"{k}.out").write_text(json.dumps(summary) + "\n")
    fleet_.stop_signum, fleet_.stop_sent_at = signal.SIGINT, 0.0
    for c, code in zip(fleet_.children, (130, 130, 4), strict=True):
        c.returncode = code
        fleet_._ended(c)
    assert fleet_.exit_code() == 4
    captured = capsys.readouterr()
    events = {e["pack_id"]: e for e in map(json.loads, captured.out.splitlines())}
    assert events["s-1"]["summary"] == summary and events["s-2"]["summary"] is None
    assert events["s-3"]["event"] == "failed" and events["s-3"]["summary"] == summary
    assert ("interrupted by SIGINT: 1 of 3 pack(s) stopped early (their summaries are of the "
            "run so far); 1 stopped before their first step (no summary)\n") in captured.err


def test_no_broker_is_said_while_the_fleet_runs_and_blames_every_pack_alike():
    """No broker: each batch process's warning is passed on as it comes, under its name;
    then Ctrl-C: every pack of a batch says it never reached the broker, those stopped
    before their staggered first step too (the batch's one session never connected), and
    the fleet exits 4 as `run` does."""
    url = f"mqtt://127.0.0.1:{free_port()}/bms"  # nothing listens there
    p = fleet("--packs", "4", "--packs-per-process", "2", "--series", "8", "--duration", "1h",
              "--speed", "1", "--mqtt", url, "--pack-prefix", "nb")
    try:
        line = stderr_line(p, "Connection refused")
        assert line.startswith(("bms-emu fleet: nb-1..nb-2: MQTT ",
                                "bms-emu fleet: nb-3..nb-4: MQTT ")), line
        time.sleep(1)  # the packs wait for the broker (batch_run.CONNECT_WAIT_S)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 4, err
    assert err.strip().endswith("4 of 4 pack(s) failed: nb-1, nb-2, nb-3, nb-4"), err
    assert err.count("never reached the broker") == 4, err


def test_a_stop_held_back_over_the_fork_is_a_clean_stop_said_in_the_childs_own_output(
        tmp_path):
    """A Ctrl-C that reaches a pack's process as it is forked waits, blocked, until the
    child has its own handlers and output: it stops the pack (130), and no traceback goes
    to the fleet's terminal."""
    out, err = tmp_path / "out", tmp_path / "err"

    def work() -> int:
        raise AssertionError("the stop should have come first")

    pid = os.fork()
    if pid == 0:  # the child, as _fork leaves it: the stop pending, blocked
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, fleet_cmd.STOP_SIGNALS)
            os.kill(os.getpid(), signal.SIGINT)
            code = fleet_cmd._run_in_child(work, out, err, os.getppid())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGINT
    assert "Traceback" not in err.read_text()


def test_a_healthy_fleet_starts_without_a_throttling_warning(mqtt_broker):
    """The broker answers a batch's discovery messages (16 a pack at QoS 1) with as many
    PUBACKs at once: answers to the session's own messages, not a flood; counted against
    the read budget they made every fleet of 16 packs or more warn that it was throttled."""
    p = fleet("--packs", "16", "--packs-per-process", "8", "--series", "8", "--duration", "3",
              "--mqtt", mqtt_broker.url, "--pack-prefix", "hd", "--quiet")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "throttled" not in err, err


def test_a_batch_process_killed_outright_has_its_packs_said_offline_by_the_fleet(mqtt_broker):
    """kill -9 of a batch process: the broker sends only the batch's will; the fleet says
    each of its packs `offline` itself and names the signal that ended them."""
    p = fleet("--packs", "4", "--packs-per-process", "2", "--series", "8", "--duration", "1h",
              "--mqtt", mqtt_broker.url, "--pack-prefix", "kx")
    try:
        started = stderr_line(p, "pack kx-1 started", stdout=True)
        online(p, mqtt_broker, {"kx-1", "kx-2", "kx-3", "kx-4"})
        os.kill(int(started.split("pid ")[1].split(",")[0]), signal.SIGKILL)
        first = stderr_line(p, "was killed by SIGKILL")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert first.startswith("bms-emu fleet: pack kx-1 (pid")
    assert "pack kx-2 (pid" in err and "was killed by SIGKILL, saying nothing" in err
    assert "2 of 4 pack(s) failed: kx-1, kx-2" in err
    assert "said `offline` for the packs of batch processes that were killed before closing " \
           "them: kx-1, kx-2" in err
    assert retained(mqtt_broker.port, "availability", 4) == dict.fromkeys(
        ["kx-1", "kx-2", "kx-3", "kx-4"], b"offline")
