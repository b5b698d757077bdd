"""Request round trip over a real pseudo-terminal pair: `bms-emu serve --sim` in a child
process on one end, a `bms.links.client.Client` in this process on the other. Prints one JSON
line.

    .venv/bin/python benchmarks/pty_roundtrip.py [--requests 2000] [--series 16,416]
        [--relay inprocess|process] [--revision 2] [--quick]

For each pack size: a fresh pty pair and emulator, a wait for its first firmware step
(until then it has no cell voltages to give, and answers GetCellVoltages with an empty
list), `--warmup` requests, then `--requests` sequential GetStatus requests and as many
GetCellVoltages; the median, p99 and max round trip are given, and the time the request
and response bytes would take on a real 8N1 line (10 bits a byte, delimiter included) at
`--baud`. The response size is the encoded length of the answers themselves, not the bytes
received over the answers counted: a frame that answers nothing (`other_frames`) or bytes
that are no frame (`other_bytes`) would skew that, and are reported instead, with the
bytes the in-process relay dropped (`relay_bytes`). Goal: GetStatus median <= 2 x that wire
time. A pty does not pace bytes at the baud rate, so the wire time is computed, not
imposed: on a real line the round trip is at least the wire time.

The 16-cell and the 416-cell emulator are measured in the same run, so the effect of pack
size (a longer SIM step that a request may wait behind, a bigger cell voltage response) is
seen as a ratio on the same machine.

The relay (the null-modem cable) runs in this process by default (`hil.pty_pair.PtyPair`),
or as a `bms-emu pty` child process with `--relay process`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bms.links.client import Client
from bms.links.serial_link import DEFAULT_BAUD
from hil.pty_pair import PtyPair
from protocol import messages as pm
from protocol.codec import Frame, encode
from protocol.framing import LATEST_REVISION, REVISION_1_0, REVISIONS, Flags

REPO = Path(__file__).resolve().parents[1]
BMS_EMU = (sys.executable, "-m", "bms_emu.main")
BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
GOAL_MEDIAN_OVER_WIRE = 2.0
PTY_NOTE = ("a pty does not pace bytes at the baud rate: wire_ms is computed from the frame "
            "lengths (10 bits a byte for 8N1, delimiter included), not imposed; on a real "
            "line the round trip is at least the wire time")


class PtyLink:
    """A linked pty pair: relayed in this process (PtyPair) or by a `bms-emu pty` child."""

    def __init__(self, relay: str):
        self.relay = relay
        self.paths: list[str] = []
        self._pair: PtyPair | None = None
        self._task: asyncio.Task | None = None
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> PtyLink:
        if self.relay == "inprocess":
            self._pair = PtyPair()
            self.paths = list(self._pair.paths)
            self._task = asyncio.create_task(self._pair.relay(), name="pty relay")
        else:
            self._proc = await asyncio.create_subprocess_exec(
                *BMS_EMU, "pty", cwd=REPO, stdout=asyncio.subprocess.PIPE)
            for _ in range(2):
                line = await asyncio.wait_for(self._proc.stdout.readline(), 30.0)
                if not line:
                    raise RuntimeError("bms-emu pty printed no paths")
                self.paths.append(line.decode().strip())
        return self

    def stats(self) -> dict | None:
        """Bytes carried and dropped each way (the in-process relay only)."""
        if self._pair is None:
            return None
        (out, back), (lost_out, lost_back) = self._pair.relayed, self._pair.dropped
        return {"relayed_first_to_second": out, "relayed_second_to_first": back,
                "dropped_first_to_second": lost_out, "dropped_second_to_first": lost_back}

    async def __aexit__(self, *exc) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._proc is not None:
            await stop_process(self._proc)


async def stop_process(proc: asyncio.subprocess.Process, timeout_s: float = 10.0,
                       sig: signal.Signals = signal.SIGINT) -> None:
    """Ctrl-C or SIGTERM (the CLI leaves cleanly on either), then a kill if it does not go
    in time."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class Emulator:
    """`bms-emu serve` in a child process; its stderr (warnings) kept for the report. Its
    default persistent store lives in a temporary $XDG_DATA_HOME, removed afterwards: each
    emulator starts afresh, and a benchmark never touches the user's stores."""

    def __init__(self, port: str, args: list[str], duration_s: float,
                 stop_signal: signal.Signals = signal.SIGINT):
        self.argv = [*BMS_EMU, "serve", "--serial", port, *args,
                     "--duration", f"{duration_s:g}"]
        self.stop_signal = stop_signal
        self.banner = ""
        self.returncode: int | None = None
        self.stderr = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: asyncio.Task | None = None
        self._data_home: tempfile.TemporaryDirectory | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def __aenter__(self) -> Emulator:
        self._data_home = tempfile.TemporaryDirectory(prefix="bench-emulator-data-")
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=REPO, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "XDG_DATA_HOME": self._data_home.name})
        self._stderr = asyncio.create_task(self._proc.stderr.read())  # until it exits
        line = await asyncio.wait_for(self._proc.stdout.readline(), 60.0)
        if not line:
            await self._proc.wait()
            self.stderr = (await self._stderr).decode(errors="replace")
            raise RuntimeError(f"{' '.join(self.argv[2:])} did not start: "
                               f"{self.stderr[-2000:]}")
        self.banner = line.decode().strip()
        return self

    async def __aexit__(self, *exc) -> None:
        await stop_process(self._proc, sig=self.stop_signal)
        self.returncode = self._proc.returncode
        self.stderr = (await self._stderr).decode(errors="replace")
        self._data_home.cleanup()

    def warnings(self) -> dict:
        """How many lines the emulator logged, and the first few."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return {"count": len(lines), "first": lines[:3]}


async def connect(port: str, revision: int = REVISION_1_0,
                  timeout_s: float = 30.0) -> tuple[Client, pm.DeviceInfo]:
    """A client speaking `revision` whose emulator answers (it may still be opening its
    end)."""
    client = Client(port, revision=revision)
    await client.start()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = await client.request(pm.GetInfo(), timeout_s=0.5)
            return client, info
        except TimeoutError:
            if time.monotonic() > deadline:
                await client.close()
                raise


async def first_step(client: Client, series: int, timeout_s: float = 30.0) -> None:
    """Until the emulator has stepped once: before that its cell voltages are empty."""
    deadline = time.monotonic() + timeout_s
    while len((await client.request(pm.GetCellVoltages())).cell_voltage_v) != series:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no cell voltages from the emulator within {timeout_s:g} s")
        await asyncio.sleep(0.01)


def frame_bytes(frame: Frame) -> int:
    """A received frame's length on the wire, delimiters included (encoding is exact)."""
    return len(encode(frame.message, frame.header.seq, frame.header.flags,
                      frame.header.revision))


def percentile_ms(times_s: list[float], q: float) -> float:
    return round(float(np.percentile(times_s, q)) * 1e3, 4) if times_s else float("nan")


async def round_trips(client: Client, msg: object, n: int, baud: int) -> dict:
    """`n` sequential requests of `msg`; round trip figures and the computed wire time."""
    ep = client.endpoint
    out0, in0 = ep.bytes_out, ep.bytes_in
    arrived: list[Frame] = []  # every frame while timing; sized once the timing is over
    deliver = ep.on_frame
    ep.on_frame = lambda frame: (arrived.append(frame), deliver(frame))
    times: list[float] = []
    timeouts = 0
    reply = None
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                reply = await client.request(msg)
            except TimeoutError:
                timeouts += 1
                continue
            times.append(time.perf_counter() - t0)
    finally:
        ep.on_frame = deliver
    answers = [f for f in arrived
               if f.header.flags & Flags.RESPONSE and type(f.message) is type(reply)]
    sizes = [frame_bytes(f) for f in answers]
    request_bytes = (ep.bytes_out - out0) / n
    response_bytes = sum(sizes) / len(sizes) if sizes else float("nan")
    wire_ms = (request_bytes + response_bytes) * BITS_PER_BYTE / baud * 1e3
    median_ms = percentile_ms(times, 50)
    return {
        "requests": n,
        "answered": len(times),
        "timeouts": timeouts,
        "response": type(reply).__name__,
        "min_ms": round(min(times) * 1e3, 4) if times else None,
        "median_ms": median_ms,
        "p99_ms": percentile_ms(times, 99),
        "max_ms": round(max(times) * 1e3, 4) if times else None,
        "request_bytes": round(request_bytes, 1),
        "response_bytes": round(response_bytes, 1),
        "response_bytes_min": min(sizes) if sizes else None,
        "response_bytes_max": max(sizes) if sizes else None,
        "other_frames": len(arrived) - len(answers),
        "other_bytes": ep.bytes_in - in0 - sum(sizes),
        "wire_ms": round(wire_ms, 4),
        "median_over_wire": round(median_ms / wire_ms, 3),
    }


async def measure_pack(series: int, args) -> dict:
    n = args.requests
    duration_s = 120.0 + n * 0.02  # a safety net: the emulator is stopped when done
    serve_args = ["--sim", "--series", str(series), "--cells-per-temp-sensor", "4",
                  "--baud", str(args.baud), "--autostart"]  # a running pack, as before 1.1
    async with PtyLink(args.relay) as link:
        async with Emulator(link.paths[0], serve_args, duration_s) as emu:
            client, info = await connect(link.paths[1], args.revision)
            try:
                if info.n_series != series:
                    raise RuntimeError(f"emulator reports {info.n_series} cells, not {series}")
                await first_step(client, series)
                for _ in range(args.warmup):
                    await client.request(pm.GetStatus())
                status = await round_trips(client, pm.GetStatus(), n, args.baud)
                status["goal_met"] = status["median_over_wire"] <= GOAL_MEDIAN_OVER_WIRE
                cells = await round_trips(client, pm.GetCellVoltages(), n, args.baud)
                errors = dict(client.endpoint.errors)
                unmatched = client.unmatched
            finally:
                await client.close()
        relay = link.stats()
    result = {
        "series": series,
        "GetStatus": status,
        "GetCellVoltages": cells,
        "client_decode_errors": errors,
        "client_unmatched_responses": unmatched,
        "emulator_log": emu.warnings(),
    }
    if relay is not None:
        result["relay_bytes"] = relay
    return result


async def run(args) -> dict:
    packs = {}
    for series in args.series:
        packs[str(series)] = await measure_pack(series, args)
    out = {
        "benchmark": "pty_roundtrip",
        "baud": args.baud,
        "relay": args.relay,
        "protocol": REVISIONS[args.revision],
        "mode": "serve --sim",
        "warmup": args.warmup,
        "requests": args.requests,
        "packs": packs,
        "goal_median_over_wire": GOAL_MEDIAN_OVER_WIRE,
        "goal_met": all(p["GetStatus"]["goal_met"] for p in packs.values()),
        "note": PTY_NOTE,
    }
    if len(args.series) > 1:
        small, large = (packs[str(s)] for s in (min(args.series), max(args.series)))
        effect: dict = {"series": [min(args.series), max(args.series)]}
        for req in ("GetStatus", "GetCellVoltages"):
            for fig in ("median_ms", "p99_ms"):
                effect[f"{req}_{fig}_ratio"] = round(large[req][fig] / small[req][fig], 3)
        out["pack_size_effect"] = effect
    out["python"] = platform.python_version()
    out["cpus"] = os.cpu_count()
    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)  # a shared machine
    return out


def series_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000,
                        help="timed requests of each kind per pack")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--series", type=series_list, default=[16, 416], metavar="N[,N...]",
                        help="pack sizes, one emulator each")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    parser.add_argument("--relay", choices=("inprocess", "process"), default="inprocess",
                        help="who carries bytes between the two ptys")
    parser.add_argument("--revision", type=int, choices=sorted(REVISIONS),
                        default=LATEST_REVISION,
                        help="the protocol revision the client speaks (1 = 1.0, 2 = 1.1)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 100 requests after 20 warm-up ones")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.warmup = 100, 20
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
