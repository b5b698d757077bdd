"""What a killed batch process cannot say itself: that its packs are `offline`.

A pack alone has its own MQTT will, `offline` on its availability topic, which the broker
sends when its process dies. The packs of a batch share one session, so one will: the
batch's (`bms_emu.batch_run`). When the fleet sees a batch process end by a signal before
its packs were closed (kill -9, the OOM killer, a second Ctrl-C), it publishes each of
those packs' retained `offline` itself, over a short connection of its own, so that a
subscriber reading only the packs' availability is not left with `online` for packs that
no longer run."""

from __future__ import annotations

import asyncio
import secrets
import threading

NOTICE_TIMEOUT_S = 10.0  # connect and publish; a broker that is away gets no notice


class OfflineNotice:
    """Sends notices in threads of their own (the fleet's loop goes on reaping and
    relaying); `wait` joins them and says which packs were or could not be told."""

    def __init__(self, args):
        self.args = args
        self._threads: list[threading.Thread] = []
        self.sent: list[str] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def send(self, pack_ids: list[str]) -> None:
        if not pack_ids:
            return
        thread = threading.Thread(target=self._send, args=(pack_ids,), daemon=True,
                                  name="offline-notice")
        thread.start()
        self._threads.append(thread)

    def _send(self, pack_ids: list[str]) -> None:
        try:
            asyncio.run(asyncio.wait_for(self._publish(pack_ids), NOTICE_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001 - told at the end; the fleet goes on
            with self._lock:
                self.failures.append(f"{', '.join(pack_ids)}: {type(exc).__name__}: {exc}")
        else:
            with self._lock:
                self.sent += pack_ids

    async def _publish(self, pack_ids: list[str]) -> None:
        import aiomqtt  # only when a batch died: its import is a cost every fleet need not pay

        from bms.links.mqtt.bridge import availability
        from bms_emu.mqtt_links import broker

        b = broker(self.args)
        async with aiomqtt.Client(hostname=b.host, port=b.port, username=b.username,
                                  password=b.password, tls_params=b.tls, timeout=5,
                                  identifier=f"bms-emu-fleet-{secrets.token_hex(4)}") as client:
            for pack_id in pack_ids:
                topic, offline = availability(b.prefix, pack_id)[0]
                await client.publish(topic, offline, qos=1, retain=True)

    def wait(self) -> list[str]:
        """Once the fleet has ended: the lines to print on its error output."""
        for thread in self._threads:
            thread.join(NOTICE_TIMEOUT_S)
        lines = []
        if self.sent:
            lines.append("bms-emu fleet: said `offline` for the packs of batch processes that "
                         f"were killed before closing them: {', '.join(self.sent)}")
        lines += [f"bms-emu fleet: could not say `offline` for {f}" for f in self.failures]
        return lines
