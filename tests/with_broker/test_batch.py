"""Packs in a batch (one process, one clock, one MQTT session) against the same packs run
alone, each with its own session, on a real Mosquitto broker: the same steps and the same
published messages, bit for bit; and what the shared session says for the packs."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import fields

import aiomqtt
import pytest

from bms.core.signals import Actuation, Measurement
from bms_emu import batch_run, run_cmd
from bms_emu.main import build_parser
from hil.batch import run_batch, stagger
from hil.runner import PackRun, run
from tests.support.mqtt_broker import Broker, require_mosquitto

# Packs that differ in seed, chemistry, load and injected faults.
PACKS = (
    ("b-1", ["--seed", "3"]),
    ("b-2", ["--seed", "4", "--chemistry", "na-nvpf", "--profile", "pulses:7"]),
    ("b-3", ["--seed", "5", "--profile", "current:-0.5C", "--inject", "4s:sense-open:cell=3",
             "--inject", "9s:temp-sensor-open:sensor=1"]),
)


def pack_args(url: str, pack_id: str, extra: list[str]):
    return build_parser().parse_args([
        "run", "--series", "8", "--duration", "20", "--speed", "max", "--mqtt", url,
        "--pack-id", pack_id, "--state-period", "1", "--arrays-period", "0.5", *extra])


def step_digest(m: Measurement, act: Actuation) -> str:
    """Every bit of a step: what was measured and all the firmware decided."""
    h = hashlib.sha256()
    for f in fields(m):
        value = getattr(m, f.name)
        h.update(value.tobytes() if hasattr(value, "tobytes") else repr(value).encode())
    h.update(repr((act.state, act.contactors.describe(), act.balance_mask.tobytes(),
                   act.charge_limit_a, act.discharge_limit_a, act.fault_bitmap, act.soc,
                   [e.as_dict() for e in act.events],
                   act.estimate.as_dict() if act.estimate else None,
                   act.charge_voltage_limit_v, act.discharge_voltage_limit_v,
                   act.open_wire_test, act.level_bitmaps)).encode())
    return h.hexdigest()


class Tap:
    """What each pack's steps were and what it published, by topic (the wall-clock
    `unix_time_s` taken out: the only field that may differ)."""

    def __init__(self) -> None:
        self.steps: dict[str, list[str]] = {}
        self.published: dict[str, list[tuple[bytes, int, bool]]] = {}

    def on_step(self, pack_id: str, then):
        steps = self.steps.setdefault(pack_id, [])

        def tapped(now_s: float, m: Measurement, act: Actuation) -> None:
            steps.append(step_digest(m, act))
            then(now_s, m, act)
        return tapped

    def _add(self, topic: str, payload: bytes | str, qos: int, retain: bool) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        try:
            body = json.loads(data)
            body.pop("unix_time_s", None) if isinstance(body, dict) else None
            data = json.dumps(body, sort_keys=True).encode()
        except ValueError:
            pass
        self.published.setdefault(topic, []).append((data, qos, retain))

    def session(self, session) -> None:
        """Each message queued on the session."""
        publish = session.publish

        def tapped(topic: str, payload, qos: int = 0, retain: bool = False) -> None:
            self._add(topic, payload, qos, retain)
            publish(topic, payload, qos, retain)
        session.publish = tapped

    def outbox(self, bridge) -> None:
        """Each fault event put in the pack's outbox (sent at QoS 1 until acknowledged)."""
        put = bridge.outbox.put

        def tapped(messages) -> None:
            for _, topic, payload in messages:
                self._add(topic, payload, 1, False)
            put(messages)
        bridge.outbox.put = tapped


def alone(url: str) -> Tap:
    tap = Tap()
    for pack_id, extra in PACKS:
        b = run_cmd.build(pack_args(url, pack_id, extra))
        tap.session(b.bridge.session)
        tap.outbox(b.bridge)
        b.bridge.session.start()
        try:
            run(b.pack, b.firmware, b.profile, b.options,
                on_step=tap.on_step(pack_id, run_cmd.after_step(b.bridge, b.keeper)))
        finally:
            run_cmd.close(b)
    return tap


def batched(url: str) -> Tap:
    tap = Tap()
    args = [pack_args(url, pack_id, extra) for pack_id, extra in PACKS]
    session = batch_run.shared_session(args[0], "b-1..b-3", len(PACKS))
    tap.session(session)
    built = [run_cmd.build(a, session) for a in args]
    for b in built:
        tap.outbox(b.bridge)
    batch_run.announce(session, "b-1..b-3", [a.pack_id for a in args])
    session.start()
    runs = [PackRun(b.pack, b.firmware, b.profile, b.options,
                    on_step=tap.on_step(a.pack_id, run_cmd.after_step(b.bridge, b.keeper)))
            for a, b in zip(args, built, strict=True)]
    try:
        results, failed = run_batch(runs, stagger(len(runs), 10), 0.1, None,
                                    after_tick=session.flush)
    finally:
        batch_run.close_all(session, "b-1..b-3", built)
    assert [r.sim_s for r in results] == [20.0] * len(PACKS) and not failed
    return tap


def retained(port: int, topic_filter: str, wait_s: float = 3.0) -> dict[str, bytes]:
    async def read() -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        async with aiomqtt.Client("127.0.0.1", port, identifier="test-batch-retained") as c:
            await c.subscribe(topic_filter, qos=1)
            try:
                async with asyncio.timeout(wait_s):
                    async for message in c.messages:
                        found[message.topic.value] = bytes(message.payload)
            except TimeoutError:
                pass
        return found

    return asyncio.run(read())


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The packs run alone, then batched, on one broker (module-wide: run once)."""
    require_mosquitto()
    broker = Broker(tmp_path_factory.mktemp("batch-broker")).start()
    try:
        yield alone(broker.url), batched(broker.url), broker
    finally:
        broker.stop()


def test_each_pack_steps_the_same_bits_in_a_batch_as_alone(both):
    one, many, _ = both
    assert set(one.steps) == set(many.steps) == {p for p, _ in PACKS}
    for pack_id, _ in PACKS:
        assert len(one.steps[pack_id]) == 200
        assert many.steps[pack_id] == one.steps[pack_id], pack_id
    assert len({s[-1] for s in one.steps.values()}) == len(PACKS)  # the packs do differ


def test_each_pack_publishes_the_same_messages_in_a_batch_as_alone(both):
    one, many, _ = both
    mine = {t: v for t, v in many.published.items()
            if "/batch/" not in t and not t.endswith("/availability")}
    assert mine.keys() == one.published.keys()
    for topic, messages in one.published.items():
        if topic.startswith("homeassistant/"):
            assert [alone_config(p) for p, *_ in mine[topic]] == [
                json.loads(p) for p, *_ in messages], topic
        else:
            assert mine[topic] == messages, topic
    assert any(t.endswith("/events") for t in one.published)  # the injections were reported
    assert sum(t.startswith("homeassistant/") for t in one.published) > 3 * 10


def test_the_shared_session_says_each_pack_online_then_offline_and_which_packs_it_holds(both):
    _, many, broker = both
    for pack_id, _ in PACKS:
        assert many.published[f"bms/{pack_id}/availability"] == [
            (b"online", 1, True), (b"offline", 1, True)]
    packs_said = many.published["bms/batch/b-1..b-3/packs"]
    assert [(json.loads(p), q, r) for p, q, r in packs_said[:1]] == [
        (["b-1", "b-2", "b-3"], 1, True)]
    assert packs_said[1:] == [(b"", 1, True)]  # removed on the clean stop
    # A clean stop leaves each pack `offline` and nothing of the batch retained: a fleet
    # laid out in other batches later finds no stale list of packs.
    found = retained(broker.port, "bms/#")
    assert {t: v for t, v in found.items() if t.endswith("availability")} == {
        f"bms/{p}/availability": b"offline" for p, _ in PACKS}
    assert not any("/batch/" in t for t in found)


def alone_config(payload: bytes) -> dict:
    """A batched pack's discovery config as the pack alone publishes it: the batch adds its
    process's will as a second availability topic that must say online too."""
    config = json.loads(payload)
    own, shared = config.pop("availability")
    assert config.pop("availability_mode") == "all"
    assert shared["topic"] == "bms/batch/b-1..b-3/availability"
    assert own["topic"].endswith("/availability") and "/batch/" not in own["topic"]
    return {"availability_topic": own["topic"], **config,
            "payload_available": own["payload_available"],
            "payload_not_available": own["payload_not_available"]}


@pytest.mark.parametrize(("n", "period", "expected"), [
    (3, 10, [0, 3, 6]), (4, 1, [0, 0, 0, 0]), (12, 10, [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9])])
def test_stagger_spreads_the_starts_evenly_over_one_period(n, period, expected):
    assert stagger(n, period) == expected
