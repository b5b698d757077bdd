"""The frame sets a CAN link speaks, each defined once as a DBC file shipped in the package
(`dbc/`) and read with cantools; what a DBC cannot say (which received frames are the
inverter's keep-alive, which requests are answered with which frames) is the table here.
Periods are the DBC's GenMsgCycleTime of the frames the BMS sends; the bitrate is its
Baudrate. docs/can.md describes both sets and their sources.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cantools.database.can import Database, Message

BMS_NODE = "BMS"  # the DBC node that sends what the emulator sends


@dataclass(frozen=True)
class Answer:
    """A received request answered at once: by the value of its `selector` signal, the
    frames that answer it; a value not listed is malformed."""

    selector: str
    frames: dict[int, tuple[str, ...]]


@dataclass(frozen=True)
class FrameSetSpec:
    dbc_file: str
    summary: str
    keepalive: frozenset[str]  # received messages that prove the inverter alive
    answers: dict[str, Answer] = field(default_factory=dict)  # request message -> answer


SPECS: dict[str, FrameSetSpec] = {
    "pylon-lv": FrameSetSpec(
        "pylon_lv.dbc", "Pylontech-compatible low-voltage set (0x351-0x35E, keep-alive 0x305)",
        frozenset({"inverter_keepalive"})),
    "pylon-hv": FrameSetSpec(
        "pylon_hv.dbc", "Pylontech high-voltage set (29-bit 0x4200 requests, 0x4210-0x4280, "
        "0x7310/0x7320 answers)",
        frozenset({"inverter_request"}),
        {"inverter_request": Answer("request", {
            0: ("bms_totals", "bms_limits", "bms_cell_voltages", "bms_cell_temperatures",
                "bms_status", "bms_forbidden"),
            2: ("bms_versions", "bms_system")})}),
}
NAMES = tuple(SPECS)
DEFAULT = "pylon-lv"


@dataclass(frozen=True)
class FrameSet:
    """A frame set ready to use: its database, what goes out every period, and the frames
    it takes by (identifier, extended)."""

    name: str
    spec: FrameSetSpec
    db: Database
    bitrate: int
    periodic: tuple[tuple[Message, float], ...]  # (message, period in s)
    received: dict[tuple[int, bool], Message]

    def message(self, name: str) -> Message:
        return self.db.get_message_by_name(name)


def dbc_text(name: str) -> str:
    """The DBC file of a frame set, as shipped."""
    return resources.files(__package__).joinpath("dbc", SPECS[name].dbc_file).read_text()


@functools.cache
def frame_set(name: str) -> FrameSet:
    """The named frame set (one of NAMES); KeyError for another name."""
    import cantools  # here, not at the top: the names and specs serve every `bms-emu` start

    spec = SPECS[name]
    db = cantools.database.load_string(dbc_text(name), "dbc", strict=True)
    sent = [m for m in db.messages if BMS_NODE in m.senders]
    return FrameSet(
        name, spec, db, int(db.dbc.attributes["Baudrate"].value),
        tuple((m, m.cycle_time / 1000.0) for m in sent if m.cycle_time),
        {(m.frame_id, m.is_extended_frame): m for m in db.messages if BMS_NODE not in m.senders})
