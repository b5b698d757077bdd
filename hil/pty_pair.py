"""A linked pair of pseudo-terminals: what a null-modem cable between two USB-serial ports
is to hardware. Bytes written to one end come out of the other.

Each pty's master is relayed to the other's; both slave ends are set raw (no echo, no line
editing) at once, before anyone opens them, and kept open by the relay so that a program
closing and reopening its end sees no hang-up. A slow reader loses no byte: while one end
takes nothing, the relay stops reading the other, whose writer finds its buffer full. An
end that takes nothing for STALL_S has no reader: what it does not take is dropped, as on a
wire, until it reads again.
Closing the relay hangs up both ends, as pulling a USB adapter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path

STALL_S = 2.0  # an end that takes nothing for this long has no reader


class PtyPair:
    def __init__(self, links: tuple[str | None, str | None] = (None, None)):
        self._fds: list[int] = []
        self.masters: list[int] = []
        self.paths: list[str] = []
        self.links = [Path(p) if p else None for p in links]
        self.ttys: list[str] = []  # the pseudo-terminals behind the links
        for link in self.links:
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._fds += [master, slave]
            self.masters.append(master)
            path = os.ttyname(slave)
            self.ttys.append(path)
            if link is not None:
                tmp = link.with_name(link.name + ".tmp")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(path)
                tmp.replace(link)  # atomic: a reader never sees the link missing mid-swap
                path = str(link)
            self.paths.append(path)
        self.relayed = [0, 0]  # bytes carried a -> b and b -> a
        self.dropped = [0, 0]  # bytes an end did not take within STALL_S: lost, as on a wire
        self._waiting = [memoryview(b""), memoryview(b"")]  # read, not yet taken by the other
        self._stalls = [0, 0]  # counts each direction's holds, so a late timer knows its own
        self._dropping = [False, False]  # the other end gave up on: its bytes go

    def _pump(self, src: int, dst: int) -> None:
        """What `src` wrote, to `dst`. While `dst` is full (its reader slow) `src` is not
        read: its writer finds its own buffer full, and no byte is lost. A reader that
        takes nothing for STALL_S is away (not started, stopped, gone): from then on what
        it does not take is dropped, as on a wire with no receiver - a writer is never
        held up for long, and a program that starts later does not get a backlog."""
        try:
            data = os.read(self.masters[src], 65536)
        except OSError:  # EAGAIN; EIO: nobody has the slave open (never, while we hold it)
            return
        rest = self._write(src, dst, memoryview(data))
        if rest and self._dropping[src]:
            self.dropped[src] += len(rest)
        elif rest:
            self._hold(src, dst, rest)
        else:
            self._dropping[src] = False  # it took everything: reading again

    def _hold(self, src: int, dst: int, rest: memoryview) -> None:
        loop = asyncio.get_running_loop()
        self._waiting[src] = rest
        loop.remove_reader(self.masters[src])
        loop.add_writer(self.masters[dst], self._drain, src, dst)
        self._give_up_later(src, dst)

    def _drain(self, src: int, dst: int) -> None:
        """`dst` takes bytes again: what waits first, then `src` is read again. Taking
        some is reading: the STALL_S starts over."""
        before = len(self._waiting[src])
        self._waiting[src] = self._write(src, dst, self._waiting[src])
        if not self._waiting[src]:
            self._resume(src, dst)
        elif len(self._waiting[src]) < before:
            self._give_up_later(src, dst)

    def _give_up_later(self, src: int, dst: int) -> None:
        """`_give_up` in STALL_S, unless the hold ends or makes progress before (either
        moves `_stalls` on)."""
        self._stalls[src] += 1
        asyncio.get_running_loop().call_later(STALL_S, self._give_up, src, dst,
                                              self._stalls[src])

    def _give_up(self, src: int, dst: int, stall: int) -> None:
        """STALL_S on one hold: `dst` is away; what waits for it is dropped."""
        if stall != self._stalls[src] or not self._waiting[src]:
            return  # that hold ended
        self.dropped[src] += len(self._waiting[src])
        self._waiting[src] = memoryview(b"")
        self._dropping[src] = True
        self._resume(src, dst)

    def _resume(self, src: int, dst: int) -> None:
        loop = asyncio.get_running_loop()
        self._stalls[src] += 1  # the hold ended: its timer does nothing
        loop.remove_writer(self.masters[dst])
        loop.add_reader(self.masters[src], self._pump, src, dst)

    def _write(self, src: int, dst: int, view: memoryview) -> memoryview:
        """Writes as much of `view` as `dst` takes; what it did not."""
        while view:
            try:
                n = os.write(self.masters[dst], view)
            except BlockingIOError:
                return view
            except OSError:  # the end is gone (closing): what waits goes with it
                return memoryview(b"")
            view = view[n:]
            self.relayed[src] += n
        return view

    async def relay(self) -> None:
        """Carries bytes both ways until cancelled, then closes both ends."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.masters[0], self._pump, 0, 1)
        loop.add_reader(self.masters[1], self._pump, 1, 0)
        try:
            await asyncio.Future()
        finally:
            for fd in self.masters:
                loop.remove_reader(fd)
                loop.remove_writer(fd)
            self.close()

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        for link, tty_path in zip(self.links, self.ttys, strict=True):
            # Only a link still ours: another pair started since with the same --link owns
            # it now (it took it over), and keeps it.
            with contextlib.suppress(OSError):
                if link is not None and os.readlink(link) == tty_path:
                    link.unlink()
