"""Protocol decoder fuzzing: a million frames, good and broken, through one
`protocol.codec.Decoder`, as a serial port would bring them. Prints one JSON line.

    .venv/bin/python benchmarks/fuzz_protocol.py [--frames 1000000] [--seed 0] [--quick]

What is fed, each case in one `feed` call (one in ten split in two): good frames of every
message type in `protocol.messages.REGISTRY` (instances built from the payload layouts,
arrays of 0..24 cells and now and then a 416-cell measurement), random bytes, and good
frames with bit flips, byte edits (changed, inserted, deleted), truncations (no closing
delimiter), splices of two good frames, and runs of non-zero bytes around the decoder's
buffer limit. After every case that is not a good frame, good frames follow until one
decodes; the bytes fed before it are the resync distance (the frame's own leading delimiter
ends the garbage, so the goal is 0). One time in four those frames are sent with the
leading delimiter shared (stripped), as a sender that puts one zero between frames would:
that distance shows what the leading delimiter buys, and frames lost that way are counted
apart.

Reported: frames fed (the good frames after garbage included) and bytes; crashes, any
exception escaping `feed` (goal 0), with the first reproducers in hex (the bytes since the
last delimiter, then the call's: fed to a fresh Decoder they raise again); decoder errors
by FrameErrorKind; frames decoded; frames decoded from broken input that match no frame
fed (a CRC collision; goal 0); good frames lost after garbage (goal 0); resync distance
p50 / p99 / max; the largest buffer seen against its bound; wall time and frames/s.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import platform
import random
import struct
import time
from collections import Counter

import construct as c
import numpy as np
from cobs import cobs

from protocol import messages as pm
from protocol.codec import Decoder, Frame, encode
from protocol.fields import BitArray, FloatArray
from protocol.framing import (
    CRC_BYTES,
    DELIMITER,
    HEADER_BYTES,
    MAX_ENCODED_BYTES,
    FrameError,
    FrameErrorKind,
    decode_frame,
)

INSTANCES_PER_TYPE = 24
BIG_MEASUREMENTS = 4  # 416-cell measurement frames in the pool
SHARED_DELIMITER_SHARE = 4  # one garbage case in this many is followed by stripped frames
REPRODUCERS = 5
REPRODUCER_BYTES = 2048  # a reproducer longer than this is cut
# Case kinds and their weights; every kind but "valid" is garbage, followed by a resync.
KINDS = {"valid": 30, "random": 12, "bit_flip": 14, "byte_edit": 10, "truncated": 10,
         "spliced": 10, "reframed": 14, "long_run": 1}


# --- good messages of every type, built from the payload layouts --------------------------

def sample(con: c.Construct, rng: random.Random) -> object:
    """A valid value for a construct field."""
    if isinstance(con, c.Renamed):
        return sample(con.subcon, rng)
    if isinstance(con, FloatArray):
        return np.array([rng.uniform(-5.0, 5.0) for _ in range(rng.randint(0, 24))],
                        np.float32)
    if isinstance(con, BitArray):
        n = rng.randint(0, 24)
        return np.array([rng.random() < 0.5 for _ in range(n)], bool) if n else None
    if isinstance(con, c.FormatField):
        kind = con.fmtstr[-1]
        if kind in "fd":
            return float(np.float32(rng.uniform(-1e3, 1e3))) if kind == "f" else rng.random()
        bits = 8 * struct.calcsize(con.fmtstr)
        return (rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)) if kind.islower()
                else rng.randrange(1 << bits))
    if isinstance(con, type(c.Flag)):
        return rng.random() < 0.5
    if isinstance(con, c.StringEncoded):
        return "".join(rng.choice("abcxyz_.:=0123 µ°") for _ in range(rng.randint(0, 20)))
    if isinstance(con, c.FocusedSeq):  # PrefixedArray: a few items
        items = next(sc.subcon for sc in con.subcons if sc.name == con.parsebuildfrom)
        return tuple(sample(items.subcon, rng) for _ in range(rng.randint(0, 3)))
    if isinstance(con, c.Struct):
        return sample_struct(con, [sc.name for sc in con.subcons], rng)
    raise TypeError(f"no sample for {con!r}: teach benchmarks/fuzz_protocol.py")


def sample_struct(struct_: c.Struct, names: list[str], rng: random.Random) -> dict:
    """The named fields; a Switch picks a case and sets the field it switches on."""
    subcons = {sc.name: sc.subcon for sc in struct_.subcons if sc.name in names}
    out = {n: sample(sc, rng) for n, sc in subcons.items() if not isinstance(sc, c.Switch)}
    for name, switch in subcons.items():
        if isinstance(switch, c.Switch):
            key = switch.keyfunc({n: n for n in names})  # this.kind -> "kind"
            out[key] = rng.choice(sorted(switch.cases))
            out[name] = sample(switch.cases[out[key]], rng)
    return out


def message(type_id: int, rng: random.Random) -> object:
    mt = pm.REGISTRY[type_id]
    names = [f.name for f in mt.cls.__dataclass_fields__.values()]
    return mt.cls(**sample_struct(mt.struct, names, rng))


def big_measurement(rng: random.Random) -> pm.MeasurementFrame:
    return pm.MeasurementFrame(
        rig_seq=rng.randrange(1 << 32), rig_time_s=rng.random() * 1e4, current_a=-12.5,
        bus_voltage_v=1270.0, contactors=5, cell_voltage_v=np.full(416, 3.05, np.float32),
        temperature_c=np.full(104, 25.0, np.float32),
        balancing=np.array([rng.random() < 0.2 for _ in range(416)]))


def frame_pool(rng: random.Random) -> list[bytes]:
    """Encoded good frames: every type, with random sequence numbers."""
    msgs = [message(t, rng) for t in sorted(pm.REGISTRY) for _ in range(INSTANCES_PER_TYPE)]
    msgs += [big_measurement(rng) for _ in range(BIG_MEASUREMENTS)]
    # each type in the revision that added it: a 1.1 type has no 1.0 layout
    return [encode(m, rng.randrange(1 << 16), revision=pm.BY_CLASS[type(m)].since)
            for m in msgs]


# --- broken frames -------------------------------------------------------------------------

def bit_flip(frame: bytes, rng: random.Random) -> bytes:
    out = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        bit = rng.randrange(8 * len(out))
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def reframed(frame: bytes, rng: random.Random) -> bytes:
    """The frame's header or payload changed under a new, good CRC: what reaches the
    header checks and the payload parsers."""
    body = bytearray(cobs.decode(frame[1:-1])[:-CRC_BYTES])
    edit = rng.randrange(6)
    if edit == 0:  # another version
        body[0] = rng.randrange(256)
    elif edit == 1:  # another message type, known or not
        body[1] = rng.randrange(256)
    elif edit == 2:  # a payload length that is not what follows
        body[5:7] = rng.randrange(1 << 16).to_bytes(2, "little")
    else:  # the payload flipped, cut or lengthened, its length field kept true
        payload = bit_flip(bytes(body[HEADER_BYTES:]) or b"\x00", rng) if edit == 3 else (
            body[HEADER_BYTES:rng.randint(HEADER_BYTES, len(body))] if edit == 4
            else body[HEADER_BYTES:] + rng.randbytes(rng.randint(1, 8)))
        body[5:7] = len(payload).to_bytes(2, "little")
        body[HEADER_BYTES:] = payload
    crc = binascii.crc32(body).to_bytes(CRC_BYTES, "little")
    return DELIMITER + cobs.encode(bytes(body) + crc) + DELIMITER


def byte_edit(frame: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(frame))
    edit = rng.randrange(3)
    if edit == 0:
        return frame[:at] + bytes([rng.randrange(256)]) + frame[at + 1:]
    if edit == 1:
        return frame[:at] + rng.randbytes(rng.randint(1, 4)) + frame[at:]
    return frame[:at] + frame[at + rng.randint(1, 4):]


def reencodes(msg: object, revision: int) -> bool:
    """Whether a message decoded from a frame of `revision` encodes in it, and decodes back
    to itself."""
    try:
        return pm.same(pm.decode_payload(*pm.encode_payload(msg, revision), revision), msg)
    except (ValueError, KeyError):
        return False


class Fuzz:
    """One decoder, fed case after case; the figures it gathers."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.pool = frame_pool(self.rng)
        self.headers = {f: self._header(f) for f in self.pool}
        self.decoder = Decoder()
        self.tail = b""  # bytes fed since the last delimiter: the decoder's whole state
        self.fed: Counter[str] = Counter()
        self.bytes_fed = 0
        self.errors: Counter[str] = Counter({k.name: 0 for k in FrameErrorKind})
        self.decoded = 0
        self.not_sent = 0
        self.not_reencodable = 0
        self.crashes: list[str] = []
        self.crash_count = 0
        self.max_buffered = 0
        self.distance: dict[bool, list[int]] = {False: [], True: []}  # by stripped
        self.lost = Counter({False: 0, True: 0})

    @staticmethod
    def _header(frame: bytes) -> tuple:
        return decode_frame(frame[1:-1]).header  # framing only: the decoder is under test

    def feed(self, data: bytes) -> list:
        """The decoder's output; an exception escaping it is a crash, kept with the bytes
        that reproduce it, and the decoder starts afresh."""
        self.bytes_fed += len(data)
        try:
            out = self.decoder.feed(data)
        except Exception:  # noqa: BLE001 - what the fuzzing is looking for
            self.crash_count += 1
            if len(self.crashes) < REPRODUCERS:
                self.crashes.append((self.tail + data)[:REPRODUCER_BYTES].hex())
            self.decoder, self.tail = Decoder(), b""
            return []
        last_zero = data.rfind(0)
        self.tail = (self.tail + data if last_zero < 0 else data[last_zero + 1:])[
            -(MAX_ENCODED_BYTES + 2):]
        self.max_buffered = max(self.max_buffered, self.decoder.frames.buffered)
        for item in out:
            if isinstance(item, FrameError):
                self.errors[item.kind.name] += 1
            else:
                self.decoded += 1
        return out

    def feed_case(self, data: bytes, sent: set | None) -> list:
        """A case in one call, or (one in ten) in two. Decoded frames must be among `sent`;
        with None (a frame rebuilt under a good CRC) any frame may come, but its message
        must be one that encodes back to itself."""
        if len(data) > 1 and self.rng.randrange(10) == 0:
            cut = self.rng.randrange(1, len(data))
            out = self.feed(data[:cut]) + self.feed(data[cut:])
        else:
            out = self.feed(data)
        for item in out:
            if not isinstance(item, Frame):
                continue
            if sent is None:
                self.not_reencodable += not reencodes(item.message, item.header.revision)
            elif item.header not in sent:
                self.not_sent += 1
        return out

    def garbage(self, kind: str) -> tuple[bytes, set | None]:
        """A broken case of `kind` and the headers of the good frames it was made from."""
        rng, a = self.rng, self.rng.choice(self.pool)
        if kind == "random":
            return rng.randbytes(rng.randint(1, 80)), set()
        if kind == "bit_flip":
            return bit_flip(a, rng), {self.headers[a]}
        if kind == "reframed":
            return reframed(a, rng), None
        if kind == "byte_edit":
            return byte_edit(a, rng), {self.headers[a]}
        if kind == "truncated":
            return a[:rng.randrange(1, len(a) - 1)], set()
        if kind == "spliced":
            b = rng.choice(self.pool)
            return (a[:rng.randrange(1, len(a))] + b[rng.randrange(1, len(b)):],
                    {self.headers[a], self.headers[b]})
        run = bytes(rng.randint(1, 255) for _ in range(8)) * ((MAX_ENCODED_BYTES + 16) // 8)
        return run[:MAX_ENCODED_BYTES + rng.randint(-8, 8)], set()  # "long_run"

    def resync(self, before: set | None) -> int:
        """Good frames after garbage until one decodes; returns how many were fed. `before`:
        the frames the garbage was made from (one that lost only its closing delimiter
        completes here)."""
        stripped = self.rng.randrange(SHARED_DELIMITER_SHARE) == 0
        skipped = 0
        for n in range(1, 100):
            frame = self.rng.choice(self.pool)
            sent = frame[1:] if stripped else frame
            self.fed["valid_after_garbage"] += 1
            out = self.feed_case(sent, None if before is None
                                 else before | {self.headers[frame]})
            if any(isinstance(i, Frame) and i.header == self.headers[frame] for i in out):
                self.distance[stripped].append(skipped)
                return n
            self.lost[stripped] += 1
            skipped += len(sent)
        raise SystemExit("the decoder did not resynchronise within 99 good frames")

    def run(self, frames: int) -> None:
        kinds, weights = list(KINDS), list(KINDS.values())
        total = 0
        while total < frames:
            kind = self.rng.choices(kinds, weights)[0]
            self.fed[kind] += 1
            if kind == "valid":
                frame = self.rng.choice(self.pool)
                self.feed_case(frame, {self.headers[frame]})
                total += 1
                continue
            data, sent = self.garbage(kind)
            self.feed_case(data, sent)
            total += 1 + self.resync(sent)


def percentiles(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {"n": a.size, "p50": int(np.percentile(a, 50)), "p99": int(np.percentile(a, 99)),
            "max": int(a.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000,
                        help="frames to feed, the good frames after garbage included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20,000 frames")
    args = parser.parse_args()
    if args.quick:
        args.frames = 20_000
    start = time.perf_counter()
    fuzz = Fuzz(args.seed)
    fuzz.run(args.frames)
    wall_s = time.perf_counter() - start
    frames = sum(fuzz.fed.values())
    lost = fuzz.lost[False]
    print(json.dumps({
        "benchmark": "fuzz_protocol",
        "seed": args.seed,
        "frames_fed": frames,
        "bytes_fed": fuzz.bytes_fed,
        "fed_by_kind": dict(sorted(fuzz.fed.items())),
        "message_types": len(pm.REGISTRY),
        "pool_frames": len(fuzz.pool),
        "crashes": fuzz.crash_count,
        "crash_reproducers_hex": fuzz.crashes,
        "errors_by_kind": dict(fuzz.errors),
        "frames_decoded": fuzz.decoded,
        "frames_not_sent": fuzz.not_sent,
        "decoded_not_reencodable": fuzz.not_reencodable,
        "valid_lost_after_garbage": lost,
        "resync_distance_bytes": percentiles(fuzz.distance[False]),
        "shared_delimiter": {"valid_lost_after_garbage": fuzz.lost[True],
                             "resync_distance_bytes": percentiles(fuzz.distance[True])},
        "max_buffered_bytes": fuzz.max_buffered,
        "buffer_bound_bytes": MAX_ENCODED_BYTES,
        "goal_met": (fuzz.crash_count == 0 and lost == 0 and fuzz.not_sent == 0
                     and fuzz.not_reencodable == 0),
        "wall_s": round(wall_s, 2),
        "frames_per_s": round(frames / wall_s),
        "python": platform.python_version(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),  # a shared machine
    }))


if __name__ == "__main__":
    main()
