"""The inverter's keep-alive as the firmware sees it: how long the inverter on a field link
(CAN) has been silent. The link says when it starts watching and when a keep-alive
arrives; the INVERTER_TIMEOUT rows (`bms.data.config.inverter_rows`) judge the silence like
any other quantity. Pure: the times are handed in."""

from __future__ import annotations


class InverterWatch:
    def __init__(self) -> None:
        self.heard_s: float | None = None  # the last keep-alive; None: no link watches

    def watch(self, now_s: float) -> None:
        """A link starts watching: the silence counts from now, so that an inverter that
        never speaks times out too. A watch under way is kept."""
        if self.heard_s is None:
            self.heard_s = now_s

    def heard(self, now_s: float) -> None:
        """A keep-alive arrived at `now_s`."""
        self.heard_s = now_s if self.heard_s is None else max(self.heard_s, now_s)

    def silence_s(self, now_s: float) -> float:
        """Seconds since the last keep-alive (or the watch's start); 0 with no watch."""
        return 0.0 if self.heard_s is None else max(now_s - self.heard_s, 0.0)
