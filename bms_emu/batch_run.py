"""Many `bms-emu run`s in one process: what a `fleet` process runs when it holds more than one
pack. Each pack is built from its own `run` arguments exactly as `run` builds it, and
stepped, recorded, closed and reported by the same code; what the packs share is one pacing
loop (`hil.batch`) and one MQTT session.

The shared session: one connection, so one will. Each pack still publishes its retained
`availability` `online` (again on every reconnect) and `offline` on a clean stop; but a
crash of the process leaves them `online` - the broker publishes only the batch's own will,
`offline` on `<prefix>/batch/<name>/availability`, and `<prefix>/batch/<name>/packs`
(retained) lists the packs whose availability it stands for; a clean stop removes both.
Each pack's Home Assistant discovery names both topics, so its entities go unavailable with
the process (`MqttBridge._publish_discovery`), and the fleet says the packs `offline` when
it sees the process killed (`bms_emu.offline_notice`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bms.data.validation import InputError
from bms.links.mqtt.bridge import availability
from bms.links.mqtt.session import MqttSession
from bms_emu import run_cmd
from bms_emu.cli_errors import EXIT_NO_LINK, input_error_text
from bms_emu.lifetime import StopRequest, stop_requests
from bms_emu.mqtt_links import broker
from hil.batch import run_batch, stagger
from hil.runner import PackRun, RunResult, sleep_until

QUEUE_PER_PACK = 2000  # the session's queue, as a pack's own session has it
# The packs' clocks start once the session is up and has sent what it queued on connecting
# (`MqttSession.wait_idle`), or after this long without: their first messages wait neither
# for the connection nor behind the packs' discovery messages (a second of latency as the
# fleet starts); a batch whose broker refuses its first try runs at once without it.
CONNECT_WAIT_S = 10.0


@dataclass(frozen=True)
class Slot:
    """Where one pack of the batch says what a `run` process would say: its standard output
    (the JSON summary), its error output and its exit code."""

    argv: list[str]
    out_path: Path
    err_path: Path
    code_path: Path

    def write(self, code: int, err: str = "") -> None:
        if err:
            with open(self.err_path, "a", encoding="utf-8") as f:
                f.write(err)
        self.code_path.write_text(f"{code}\n")


def batch_topic(prefix: str, name: str) -> str:
    return f"{prefix}/batch/{name}"


def shared_session(args, name: str, n_packs: int) -> MqttSession:
    """One session for the batch: its will says the batch is `offline`; a clean stop
    removes its retained topics instead (`close_all`: each pack says `offline` itself, and
    a later fleet laid out in other batches finds no stale ones). It sends once a batch
    tick what the tick published (`run_batch`'s `after_tick`)."""
    b = broker(args)
    topic = f"{batch_topic(b.prefix, name)}/availability"
    return MqttSession(b, f"bms-emu-batch-{name}", will=(topic, b"offline"),
                       online=(topic, b"online"), farewell=(topic, b""),
                       queue_size=QUEUE_PER_PACK * n_packs,
                       max_message_bytes=args.mqtt_max_bytes, wake_on_publish=False)


def _build(args, slot: Slot, session: MqttSession | None) -> run_cmd.Built | None:
    """The pack as `run` builds it; None when it cannot be (its slot says why, as `run`
    would: exit 2 for bad input, 1 for anything else)."""
    try:
        return run_cmd.build(args, session)
    except InputError as exc:
        slot.write(2, input_error_text("run", exc) + "\n")
    except Exception:  # noqa: BLE001 - one pack that cannot start must not stop the others
        slot.write(1, traceback.format_exc())
    return None


def run_packs(run_parser: argparse.ArgumentParser, slots: Sequence[Slot], name: str,
              start_gate: Callable[[Callable[[], bool]], None] | None = None,
              tick_phase: float = 0.0) -> int:
    """Builds, runs and reports every pack; 0, or 1 if any pack failed (its slot says how).
    The packs start once the session is idle (CONNECT_WAIT_S) and `start_gate(stop)` has
    returned (the fleet's other processes ready too: `bms_emu.start_gate`), staggered over
    the longer telemetry period, so they do not all publish in the same tick. A paced
    batch's ticks begin `tick_phase` (a fraction) of a tick after the gate: the fleet gives
    its processes phases spread over the tick, so that they do not all wake, step and send
    at the same instants and queue for the cores (and the subscriber) together."""
    args = [run_parser.parse_args(slot.argv) for slot in slots]
    first = args[0]
    session = shared_session(first, name, len(slots)) if first.mqtt is not None else None
    built = {j: b for j, slot in enumerate(slots) if (b := _build(args[j], slot, session))}
    if not built:
        return 1
    some = next(iter(built.values()))
    if session is not None:
        announce(session, name, [b.bridge.pack_id for b in built.values()])
        session.start()
    period_s = max(first.state_period, first.arrays_period) if session else 1.0
    ticks = stagger(len(built), round(period_s / some.options.tick_s))
    codes: dict[int, int] = {}
    with ExitStack() as stack:
        records = {j: run_cmd.open_recording(args[j], stack) for j in built}
        runs = {j: PackRun(b.pack, b.firmware, b.profile, b.options, records[j],
                           run_cmd.after_step(b.bridge, b.keeper, b.can))
                for j, b in built.items()}
        try:
            with stop_requests() as stop:  # also while the session comes up
                if session is not None:
                    session.wait_idle(CONNECT_WAIT_S, stop)
                if start_gate is not None:
                    start_gate(stop)
                if some.options.speed:
                    sleep_until(time.perf_counter()
                                + tick_phase * some.options.tick_s / some.options.speed, stop)
                results, failed = run_batch(list(runs.values()), ticks, some.options.tick_s,
                                            some.options.speed, stop,
                                            session.flush if session is not None else None)
        finally:
            close_all(session, name, built.values())
        for index, ((j, b), result) in enumerate(zip(built.items(), results, strict=True)):
            if index in failed:  # as `run` would end: its traceback, exit 1
                exc = failed[index]
                slots[j].write(1, "".join(traceback.format_exception(exc)))
                codes[j] = 1
            else:
                codes[j] = _report(slots[j], args[j], b, records[j], result, stop)
    return 1 if len(codes) < len(slots) or any(codes.values()) else 0


def announce(session: MqttSession, name: str, pack_ids: list[str]) -> None:
    """Before the session starts: the batch's packs, and each pack `online` (kept by the
    session as retained: sent again on every reconnect)."""
    session.publish(f"{batch_topic(session.broker.prefix, name)}/packs", json.dumps(pack_ids),
                    qos=1, retain=True)
    for pack_id in pack_ids:
        session.publish(*availability(session.broker.prefix, pack_id)[1], qos=1, retain=True)


def close_all(session: MqttSession | None, name: str, built: Iterable[run_cmd.Built]) -> None:
    """Each pack says `offline`, the batch's retained topics are removed, the session
    delivers what it can and stops, then each pack closes as `run` closes it (its bridge
    forgets what the broker acknowledged)."""
    if session is not None:
        for b in built:
            session.publish(*availability(session.broker.prefix, b.bridge.pack_id)[0],
                            qos=1, retain=True)
        # An empty retained message removes the retained one (the batch's availability
        # goes the same way: the session's farewell).
        session.publish(f"{batch_topic(session.broker.prefix, name)}/packs", b"", qos=1,
                        retain=True)
        session.stop()
    for b in built:
        run_cmd.close(b)


def _report(slot: Slot, args, b: run_cmd.Built, record_to: TextIO | None,
            result: RunResult, stop: StopRequest) -> int:
    """The pack's recording finished and its summary written where `run`'s would go. A pack
    stopped before its staggered start has no summary: it says it stopped."""
    if result.last is None:  # the batch's session never up: as its stepped packs say it
        never = run_cmd.never_connected(b)
        code = EXIT_NO_LINK if never else stop.exit_code or 1
        slot.write(code, f"bms-emu run: stopped by {stop.name} before its first step\n"
                   + (f"{never}\n" if never else ""))
        return code
    with open(slot.out_path, "w", encoding="utf-8") as out, \
            open(slot.err_path, "a", encoding="utf-8") as err, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cmd.finish_recording(args, record_to)
            code = run_cmd.report(args, b, result, stop.name, stop.exit_code)
        except Exception:  # noqa: BLE001 - the other packs are still reported
            traceback.print_exc()
            code = 1
    slot.write(code)
    return code


def main_in_child(run_parser: argparse.ArgumentParser, slots: Sequence[Slot], name: str,
                  start_gate: Callable[[Callable[[], bool]], None] | None = None,
                  tick_phase: float = 0.0) -> int:
    """The batch's whole life in a forked child (whose own stdout and stderr are a file)."""
    try:
        return run_packs(run_parser, slots, name, start_gate, tick_phase)
    except Exception:  # noqa: BLE001 - said in the batch's error output, each pack fails
        traceback.print_exc(file=sys.stderr)
        return 1
