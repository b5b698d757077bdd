"""No protocol link: `serve --sim` with only field links (CAN, Modbus), no serial port and no
MQTT. The runtime keeps its one Endpoint on this link: nothing ever arrives, and what the
runtime would send (fault events; telemetry nobody can subscribe to) goes nowhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class NoLink:
    port = "no protocol link"
    last_error = ""
    connected = False

    def __init__(self) -> None:
        self.opened = asyncio.Event()  # never set

    def send(self, data: bytes, event: bool = False) -> bool:
        return False  # dropped, as a serial link drops frames while its port is away

    async def run(self) -> None:
        await asyncio.Event().wait()  # until cancelled


def no_link(_on_data: Callable[[bytes], None], _on_connection: Callable[[bool], None]
            ) -> NoLink:
    """A LinkFactory (`bms.links.serial_link`)."""
    return NoLink()
