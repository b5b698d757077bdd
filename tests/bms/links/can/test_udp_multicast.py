"""Two processes on one host, no hardware: `bms-emu run --can udp_multicast:GROUP` in one,
an inverter (this test) in the other, over python-can's udp_multicast interface. Skipped,
saying why, where the host cannot loop multicast back to itself."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time

import can
import pytest

from bms.links.can.frame_sets import frame_set
from tests.support.processes import CLI


def group() -> str:
    """A multicast group of its own. python-can binds every group to the same UDP port, so
    on Linux another run's frames (another group) may still be heard: the checks here are
    on what must arrive, never on what must not."""
    return f"239.74.{random.randrange(256)}.{random.randrange(1, 255)}"


def multicast_or_skip(channel: str) -> None:
    try:
        a = can.Bus(interface="udp_multicast", channel=channel)
        b = can.Bus(interface="udp_multicast", channel=channel)
    except (OSError, can.CanError) as exc:
        pytest.skip(f"udp_multicast cannot open {channel} here: {exc}")
    try:
        a.send(can.Message(arbitration_id=0x7FF, data=b"probe", is_extended_id=False))
        if b.recv(timeout=2.0) is None:
            pytest.skip(f"multicast to {channel} does not loop back on this host")
    finally:
        a.shutdown()
        b.shutdown()


def be_the_inverter(channel: str, child: subprocess.Popen) -> tuple[dict[str, dict], str, str]:
    """Sends the keep-alive and decodes what comes, until the child ends: (the newest
    frame of each periodic message, decoded; the child's stdout; its stderr)."""
    frames = frame_set("pylon-lv")
    by_key = {(m.frame_id, m.is_extended_frame): m for m, _ in frames.periodic}
    inverter = can.Bus(interface="udp_multicast", channel=channel)
    got: dict[str, dict] = {}
    try:
        deadline = time.monotonic() + 60.0  # a guard against a hang, not a timing check
        while child.poll() is None and time.monotonic() < deadline:
            inverter.send(can.Message(arbitration_id=0x305, data=bytes(8),
                                      is_extended_id=False))
            while (frame := inverter.recv(timeout=0.25)) is not None:
                message = by_key.get((frame.arbitration_id, frame.is_extended_id))
                if message is not None:
                    got[message.name] = message.decode(bytes(frame.data))
        out, err = child.communicate(timeout=30.0)
    finally:
        if child.poll() is None:
            child.kill()
        inverter.shutdown()
    assert child.returncode == 0, err
    assert set(got) == {m.name for m, _ in frames.periodic}
    assert got["bms_manufacturer"]["manufacturer_char_1"] == ord("P")
    return got, out, err


def test_run_and_an_inverter_in_another_process_speak_pylon_lv_over_udp_multicast(multicast_alone):
    channel = group()
    multicast_or_skip(channel)
    child = subprocess.Popen([*CLI, "run", "--duration", "4", "--speed", "1", "--json",
                              "--can", f"udp_multicast:{channel}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, out, _ = be_the_inverter(channel, child)
    summary = json.loads(out)
    assert summary["can"]["keepalives"] >= 1
    assert summary["can"]["sent"]["bms_limits"] >= 3
    assert not [e for e in summary["events"] if e["name"] == "INVERTER_TIMEOUT"]


def test_serve_speaks_beside_its_serial_link_and_reports_the_bus_in_its_stats(
        tmp_path, multicast_alone):
    channel = group()
    multicast_or_skip(channel)
    master, slave = os.openpty()
    stats_path = tmp_path / "stats.json"
    try:
        child = subprocess.Popen([*CLI, "serve", "--sim", "--serial", os.ttyname(slave),
                                  "--no-nvm", "--duration", "4", "--stats", str(stats_path),
                                  "--can", f"udp_multicast:{channel}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, out, _ = be_the_inverter(channel, child)
    finally:
        os.close(slave)
        os.close(master)
    assert f"CAN udp_multicast:{channel} (pylon-lv)" in out
    stats = json.loads(stats_path.read_text())["can"]
    assert stats["bus"] == f"udp_multicast:{channel}" and stats["failures"] == 0
    assert stats["keepalives"] >= 1 and stats["sent"]["bms_requests"] >= 3
