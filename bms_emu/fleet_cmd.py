"""`bms-emu fleet`: N simulated packs on one MQTT broker, in forked child processes that each
run one pack (`bms-emu run`) or a batch of them (`bms_emu.batch_run`).

Why and how: docs/internals.md, bms_emu/fleet_cmd.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bms.data.validation import InputError, Problems
from bms.runtime.process_life import end_with_parent
from bms_emu import batch_run, error_relay, run_cmd
from bms_emu.cli_errors import EXIT_NO_LINK, input_error_text
from bms_emu.help_format import DefaultsShown
from bms_emu.mqtt_args import (
    MAX_PACK_ID_CHARS,
    PACK_ID,
    check_pack_id,
    default_pack_id,
    short_lived_text,
)
from bms_emu.offline_notice import OfflineNotice
from bms_emu.start_gate import StartGate

MAX_PACKS = 1000
STOP_GRACE_S = 10.0
POLL_S = 0.1
STDERR_TAIL_LINES = 12
# `run` options the fleet sets itself for each child instead of passing them through.
FLEET_SET = {"help", "pack_id", "seed", "speed", "json", "quiet", "record", "plot", "nvm"}
PER_PACK_FILES = ("record", "plot", "nvm")  # each pack writes its own, the pack id added
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# How a pack's process ends when the fleet forwards a stop signal to it: `run`'s 128 + the
# signal, or the signal itself (a process not yet past its start-up).
CLEAN_STOP_CODES = {0} | {c for sig in STOP_SIGNALS for c in (-sig, 128 + sig)}
SECOND_SIGNAL = "a second stop signal"
SHARD = re.compile(r"(\d+)/(\d+)")
# `auto` batches no more packs than this: a batch's messages wait for the rest of its tick
# (it sends once a tick) and a process gets one share of a busy machine's cores. Measured,
# 500 packs of 416 cells on 2 busy cores: 10 processes of 50 kept 0.6 of real time, p99
# 535 ms; 2 of 250, 0.2 and 3.6 s. 50 packs already spread a process's own cost thin.
AUTO_MAX_PACKS_PER_PROCESS = 50


def _run_parser() -> argparse.ArgumentParser:
    """`run`'s own parser, the parent of the fleet's."""
    sub = argparse.ArgumentParser(prog="bms-emu", add_help=False).add_subparsers()
    run_cmd.add_parser(sub)
    return sub.choices["run"]


def add_parser(sub) -> None:
    run_parser = _run_parser()
    p = sub.add_parser(
        "fleet", parents=[run_parser], conflict_handler="resolve",
        formatter_class=DefaultsShown,
        description="Run N simulated sodium-ion packs in processes forked from the fleet, "
        "each holding one pack (as `bms-emu run`) or a batch of packs stepped on one clock "
        "with one MQTT session (--packs-per-process), publishing "
        "to one MQTT broker as <prefix>/<pack-prefix>-<k>/... for k = 1..N. Every `run` option "
        "applies to each pack; pack k gets the seed --seed + k - 1, so the packs differ. Real "
        "time by default. --record, --plot and --nvm write one file per pack, the pack id added "
        "before the suffix. Prints one line per pack started and one per pack ended; Ctrl-C or "
        "SIGTERM stops every pack cleanly (each publishes `offline`; a second signal kills "
        "them). Exits 1 if any pack failed, naming it with the end of its error output (4 if "
        "every failed pack never reached the broker); else 130 or 143 when a signal stopped "
        "it, 0 when every pack ran its duration, 2 for bad options (nothing started).",
    )
    p.add_argument("--packs", type=int, required=True, metavar="N", default=argparse.SUPPRESS,
                   help=f"packs to run, 1..{MAX_PACKS}")
    p.add_argument("--packs-per-process", default="auto", metavar="M|auto",
                   help="packs stepped by one process, on one clock and one MQTT session "
                   "(1: each pack its own `bms-emu run`); auto: as many processes as cores, "
                   f"the packs split evenly among them, {AUTO_MAX_PACKS_PER_PROCESS} a process "
                   "at most")
    p.add_argument("--shard", default="1/1", metavar="K/N",
                   help="run host K's share of a fleet split over N hosts: the packs "
                   "(K-1)*P/N+1 .. K*P/N of --packs P, with their ids and seeds as the "
                   "whole fleet gives them")
    p.add_argument("--pack-prefix", metavar="NAME", default=host_prefix(),
                   help="pack ids are NAME-1 .. NAME-N")
    p.add_argument("--pack-id", default=None, help=argparse.SUPPRESS)  # see --pack-prefix
    p.add_argument("--json", action="store_true",
                   help="print one JSON object a line: each pack started and ended, with its "
                   "run summary")
    p.add_argument("--quiet", action="store_true",
                   help="print only the packs started and the failures")
    p.set_defaults(handler=handle, speed="1", run_parser=run_parser)


@dataclass
class Child:
    k: int
    pack_id: str
    seed: int
    out_path: Path
    err_path: Path
    pid: int = 0
    returncode: int | None = None
    summary: dict | None = field(default=None, repr=False)
    code_path: Path | None = None  # in a batch: the pack's own exit code, as it wrote it
    process_err_path: Path | None = None  # in a batch: the process's error output


def shard_range(text: str, packs: int) -> range:
    """The pack numbers (1-based) host K of N runs: a contiguous share, the first hosts one
    fewer when N does not divide the fleet. ValueError says what is wrong."""
    match = SHARD.fullmatch(text.strip())
    if match is None:
        raise ValueError("must be K/N with whole numbers 1 <= K <= N, e.g. 2/3 for host 2 "
                         "of 3")
    k, n = int(match[1]), int(match[2])
    if not 1 <= n <= packs:
        raise ValueError(f"N must be within [1, --packs = {packs}]")
    if not 1 <= k <= n:
        raise ValueError(f"K must be within [1, N = {n}]")
    return range((k - 1) * packs // n + 1, k * packs // n + 1)


def packs_per_process(text: str, packs: int, cores: int | None = None) -> int:
    """`auto`: as many processes as cores, the packs split evenly (a process steps its packs
    in one thread, so one a core uses the machine), but no more than
    AUTO_MAX_PACKS_PER_PROCESS packs a process. ValueError says what is wrong."""
    if text == "auto":
        return min(math.ceil(packs / (cores or os.cpu_count() or 1)),
                   AUTO_MAX_PACKS_PER_PROCESS)
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be 'auto' or a whole number") from None
    if not 1 <= value <= MAX_PACKS:
        raise ValueError(f"must be 'auto' or within [1, {MAX_PACKS}]")
    return value


def pack_ids(prefix: str, numbers: range) -> list[str]:
    return [f"{prefix}-{k}" for k in numbers]


def host_prefix() -> str:
    return "".join(c if PACK_ID.fullmatch(c) else "-" for c in default_pack_id(None))


def check(args) -> None:
    """Every bad option at once, before any child starts: the fleet's own, and what `run`
    checks, as pack 1 would be given it."""
    problems = Problems("bms-emu fleet")
    problems.check_range("--packs", args.packs, 1, MAX_PACKS)
    packs_ok = 1 <= args.packs <= MAX_PACKS  # the shares of a fleet of no size: not told
    for flag, parse in (("--shard", shard_range), ("--packs-per-process", packs_per_process)):
        value = getattr(args, flag[2:].replace("-", "_"))
        try:
            parse(value, args.packs if packs_ok else 1)
        except ValueError as exc:
            if packs_ok or "--packs" not in str(exc):
                problems.add(flag, value, str(exc))
    # Room for the largest pack number: a pack id is <prefix>-<k>.
    check_pack_id(problems, "--pack-prefix", args.pack_prefix,
                  MAX_PACK_ID_CHARS - len(f"-{MAX_PACKS}"))
    if args.pack_id is not None:
        problems.add("--pack-id", args.pack_id,
                     "a fleet names its packs <pack-prefix>-<k>: use --pack-prefix")
    if args.mqtt is None:
        problems.add("--mqtt", None, "a fleet publishes over MQTT: give --mqtt URL")
    if args.can is not None:
        problems.add("--can", args.can, "a CAN bus carries one battery's frame set: put each "
                     "pack on its own bus with `bms-emu run --can` or `serve --can`")
    for name in PER_PACK_FILES:
        path = getattr(args, name)
        if path and not Path(path).resolve().parent.is_dir():
            problems.add(f"--{name}", path, "its directory does not exist")
    probe = argparse.Namespace(**vars(args))
    probe.pack_id = "fleet-1"
    probe.nvm = None  # the probe opens no store: pack 1 will
    try:
        run_cmd.build(probe)
    except InputError as exc:
        problems.items += [p if exc.source == "bms-emu run" else f"{exc.source}: {p}"
                           for p in exc.problems]
    problems.raise_if_any()


def _by_signal(returncode: int) -> bool:
    """A process ended by a signal (subprocess gives -SIGNUM), one Python knows by name."""
    return returncode < 0 and -returncode in signal.valid_signals()


def _per_pack_path(path: str, pack_id: str) -> str:
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{pack_id}{p.suffix}"))


def run_argv(args, pack_id: str, seed: int) -> list[str]:
    """`bms-emu run`'s arguments for one pack: the options that differ from `run`'s
    defaults, passed on as given, plus the pack's id and seed, the fleet's speed and a JSON
    summary."""
    argv = [f"--pack-id={pack_id}", f"--seed={seed}", f"--speed={args.speed}", "--json"]
    for action in args.run_parser._actions:
        if not action.option_strings or action.dest in FLEET_SET:
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        option = action.option_strings[-1]
        if action.nargs == 0:  # a flag: store_true / store_false
            argv.append(option)
        elif isinstance(value, list):  # append
            argv += [f"{option}={item}" for item in value]
        else:
            argv.append(f"{option}={value}")
    for name in PER_PACK_FILES:
        if getattr(args, name):
            argv.append(f"--{name}={_per_pack_path(getattr(args, name), pack_id)}")
    return argv


def _run_in_child(work: Callable[[], int], out_path: Path, err_path: Path,
                  parent_pid: int) -> int:
    """In a forked child: a process of its own, then `work` (`bms-emu run ARGV`, or a batch);
    its exit code."""
    os.setsid()  # out of the terminal's process group: the fleet forwards Ctrl-C
    if not end_with_parent(parent_pid, signal.SIGINT):  # the fleet died before it could ask
        return 1
    random.seed()  # the fork copied the fleet's state: reconnection jitter must differ
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        # Blocked over the fork: a stop sent meanwhile lands here, a stop like any other.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return work() or 0
    except InputError as exc:  # as `bms-emu run` says it (bms_emu.main)
        print(input_error_text("run", exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def _work(args, children: list[Child], gate: StartGate,
          tick_phase: float) -> tuple[Callable[[], int], str]:
    """What a process runs for `children` (one: `bms-emu run`; more: a batch, which waits
    at the fleet's start gate and then `tick_phase` of a tick), and the name of its output
    files."""
    parser = args.run_parser
    if len(children) == 1:
        (c,) = children
        argv = run_argv(args, c.pack_id, c.seed)
        return (lambda: run_cmd.handle(parser.parse_args(argv))), str(c.k)
    name = _batch_name(children)
    slots = [batch_run.Slot(run_argv(args, c.pack_id, c.seed), c.out_path, c.err_path,
                            c.code_path) for c in children]
    return ((lambda: batch_run.main_in_child(parser, slots, name, gate.wait, tick_phase)),
            f"batch-{children[0].k}")


def _batch_name(children: list[Child]) -> str:
    return f"{children[0].pack_id}..{children[-1].pack_id}"


def _fork(args, children: list[Child], workdir: Path, gate: StartGate,
          tick_phase: float) -> Path:
    """Starts one process for `children` (each gets its pid); its error output's path."""
    work, stem = _work(args, children, gate, tick_phase)
    out_path, err_path = workdir / f"{stem}.process.out", workdir / f"{stem}.process.err"
    if len(children) == 1:
        out_path, err_path = children[0].out_path, children[0].err_path
    parent_pid = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    # A signal arriving between the fork and the child's own handlers must not be lost to
    # the fleet's handler in the child: held back until the child has set its handlers.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        for c in children:
            c.pid = pid
            if len(children) > 1:
                c.process_err_path = err_path
        return err_path
    code = 1
    try:
        gate.in_child(waits=len(children) > 1)
        code = _run_in_child(work, out_path, err_path, parent_pid)
    except BaseException:  # noqa: BLE001 - a child must never return into the fleet's code
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _summary(path: Path) -> dict | None:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def _mqtt_counts(m: dict | None) -> str:
    if m is None:
        return ""
    return (f"; MQTT {m['published']} published, {m['dropped']} dropped, {m['kept']} fault "
            f"events kept, {m['kept_dropped']} lost{short_lived_text(m)}")


def _pack_code(c: Child, process_code: int) -> int:
    """A pack's exit code: as its batch wrote it, else its process's (a pack alone, or a
    batch that ended before the pack was reported)."""
    try:
        return int(c.code_path.read_text()) if c.code_path else process_code
    except (OSError, ValueError):
        return process_code


def _reap(pid: int) -> int | None:
    """The child's exit code (negative: the signal that ended it), or None while it runs."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status) if done else None


def _end_text(c: Child, event: str) -> str:
    """`pack X done: ...` / `pack X stopped: ...` with its summary's figures."""
    s = c.summary
    if s is None:
        return f"pack {c.pack_id} {event} before its first step"
    return (f"pack {c.pack_id} {event}: {s['sim_s']:g} s simulated in {s['wall_s']:g} s "
            f"(rtf {s['rtf']:g}), {s['final']['state']}, SoC {s['final']['soc_pct']:g} %"
            f"{_mqtt_counts(s.get('mqtt'))}")


class Fleet:
    def __init__(self, args, workdir: Path | None = None):
        self.args = args
        self.children: list[Child] = []
        self.workdir = workdir  # where the packs' output files go, once made
        self.signals = 0
        self.stop_signum: int | None = None  # the first stop signal, forwarded to the packs
        self.stop_sent_at: float | None = None
        self.killed = ""  # why the packs still running were killed
        self.failed: list[Child] = []
        self.cut_short: list[Child] = []  # killed by a second stop signal, as asked
        self.ends: dict[str, int] = {}  # packs by how they ended: done, stopped, ...
        self.gate = StartGate()
        self.relay = error_relay.ErrorRelay()
        self.notice = OfflineNotice(args)

    # --- output ------------------------------------------------------------------------

    def _say(self, event: dict, text: str, always: bool = False) -> None:
        if self.args.json:
            print(json.dumps(event), flush=True)
        elif always or not self.args.quiet:
            print(text, flush=True)

    def _started(self, c: Child) -> None:
        pid = c.pid
        self._say({"event": "started", "pack_id": c.pack_id, "pid": pid, "seed": c.seed},
                  f"pack {c.pack_id} started: pid {pid}, seed {c.seed}", always=True)

    def _ended(self, c: Child) -> None:
        """Says how the pack ended: done (its whole duration), stopped (by the fleet's stop
        signal: its summary is of the run so far), killed (by a second stop signal: asked
        for, not a failure), or failed (named on stderr with its error output)."""
        code = c.returncode
        if code == 0 or (self.stop_sent_at is not None and code in CLEAN_STOP_CODES):
            c.summary = _summary(c.out_path)
            event = "done" if code == 0 else "stopped"
            counted = event if c.summary is not None else f"{event} before its first step"
            self.ends[counted] = self.ends.get(counted, 0) + 1
            self._say({"event": event, "pack_id": c.pack_id, "returncode": code,
                       "summary": c.summary}, _end_text(c, event))
            return
        if self.killed == SECOND_SIGNAL and code == -signal.SIGKILL:
            self.cut_short.append(c)
            self._say({"event": "killed", "pack_id": c.pack_id, "returncode": code},
                      f"pack {c.pack_id} killed by {SECOND_SIGNAL}")
            return
        self.failed.append(c)
        tail = _tail(c.err_path) or (_tail(c.process_err_path) if c.process_err_path else "")
        why = (f"was killed after {self.killed}" if self.killed and code == -signal.SIGKILL
               else f"was killed by {signal.Signals(-code).name}" if _by_signal(code)
               else f"exited with {code}")
        if self.args.json:  # with its summary, when it wrote one (exit 4: never connected)
            self._say({"event": "failed", "pack_id": c.pack_id, "returncode": code,
                       "summary": _summary(c.out_path), "stderr_tail": tail}, "")
        said = f"bms-emu fleet: pack {c.pack_id} (pid {c.pid}, seed {c.seed}) {why}"
        if not tail and _by_signal(code):  # a kill leaves nothing to show, pack by pack
            print(f"{said}, saying nothing", file=sys.stderr, flush=True)
            return
        indented = "\n".join(f"    {line}" for line in tail.splitlines()) or "    (nothing)"
        print(f"{said}; its error output ends:\n{indented}", file=sys.stderr, flush=True)

    # --- lifetime ----------------------------------------------------------------------

    def on_signal(self, signum, _frame) -> None:
        self.signals += 1  # acted on in the loop, not here
        if self.stop_signum is None:
            self.stop_signum = signum

    def start_all(self) -> None:
        """This host's share of the fleet, M packs a process."""
        a = self.args
        numbers = shard_range(a.shard, a.packs)
        per_process = packs_per_process(a.packs_per_process, len(numbers))
        try:
            for first in range(0, len(numbers), per_process):
                if self.signals:
                    return
                share = numbers[first:first + per_process]
                group = [Child(k, pack_id, a.seed + k - 1, self.workdir / f"{k}.out",
                               self.workdir / f"{k}.err", code_path=self.workdir / f"{k}.code")
                         for k, pack_id in zip(share, pack_ids(a.pack_prefix, share),
                                               strict=True)]
                # Each batch process its own phase of the tick: the share of this host's
                # packs before its first (`batch_run.run_packs`).
                err_path = _fork(a, group, self.workdir, self.gate, first / len(numbers))
                name = group[0].pack_id if len(group) == 1 else _batch_name(group)
                self.relay.watch(group[0].pid, name, err_path)
                for c in group:
                    self.children.append(c)
                    self._started(c)
        finally:
            self.gate.forked()

    def running(self) -> list[Child]:
        return [c for c in self.children if c.returncode is None]

    def _pids(self) -> list[int]:
        """The processes still running, each once (a batch's packs share one)."""
        return list(dict.fromkeys(c.pid for c in self.running()))

    def _send(self, sig: int) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def wait_all(self) -> None:
        relayed_at = time.monotonic()
        while True:
            self.gate.poll()
            if self.stop_sent_at is None and time.monotonic() - relayed_at >= error_relay.PERIOD_S:
                self.relay.relay()  # stopping, each pack says why in its own line
                relayed_at = time.monotonic()
            for pid in self._pids():
                code = _reap(pid)
                if code is None:
                    continue
                self.relay.forget(pid)
                ended = [c for c in self.running() if c.pid == pid]
                for c in ended:
                    c.returncode = _pack_code(c, code)
                    self._ended(c)
                # A batch killed before it closed its packs: their `offline` is the fleet's
                # to say (a pack alone has its own will).
                self.notice.send([c.pack_id for c in ended
                                  if c.code_path is not None and _by_signal(c.returncode)])
            if not self.running():
                return
            if self.signals and self.stop_sent_at is None:
                self.stop_sent_at = time.monotonic()
                self._send(self.stop_signum)
            elif self.stop_sent_at is not None and not self.killed and (
                    self.signals > 1 or time.monotonic() - self.stop_sent_at > STOP_GRACE_S):
                self.killed = (SECOND_SIGNAL if self.signals > 1
                               else f"{STOP_GRACE_S:g} s without stopping")
                self._send(signal.SIGKILL)
            time.sleep(POLL_S)

    def exit_code(self) -> int:
        """Says how the fleet ended; its exit code: 1 if a pack failed (EXIT_NO_LINK if
        every failed pack never reached the broker), else 128 + the stop signal (as `run`),
        else 0."""
        if self.stop_signum is not None:
            planned = len(shard_range(self.args.shard, self.args.packs))
            parts = []
            if stopped := self.ends.get("stopped"):
                parts.append(f"{stopped} of {len(self.children)} pack(s) stopped early (their "
                             "summaries are of the run so far)")
            if early := self.ends.get("stopped before its first step"):
                parts.append(f"{early} stopped before their first step (no summary)")
            if self.cut_short:
                parts.append(f"{len(self.cut_short)} killed by {SECOND_SIGNAL}: "
                             + ", ".join(c.pack_id for c in sorted(self.cut_short,
                                                                   key=lambda c: c.k)))
            if len(self.children) < planned:
                parts.append(f"{planned - len(self.children)} never started")
            said = f"bms-emu fleet: interrupted by {signal.Signals(self.stop_signum).name}"
            print(f"{said}: {'; '.join(parts)}" if parts else said, file=sys.stderr)
        if self.failed:
            names = ", ".join(c.pack_id for c in sorted(self.failed, key=lambda c: c.k))
            print(f"bms-emu fleet: {len(self.failed)} of {len(self.children)} pack(s) failed: "
                  f"{names}", file=sys.stderr)
            return (EXIT_NO_LINK if all(c.returncode == EXIT_NO_LINK for c in self.failed)
                    else 1)
        return 0 if self.stop_signum is None else 128 + self.stop_signum


def handle(args) -> int:
    fleet = Fleet(args)
    # Counted from the start: a Ctrl-C while `check` builds a probe pack (and imports the
    # MQTT modules) would otherwise be a KeyboardInterrupt that an import may swallow.
    previous = {sig: signal.signal(sig, fleet.on_signal) for sig in STOP_SIGNALS}
    try:
        check(args)
        if fleet.signals:
            return fleet.exit_code()  # interrupted: every pack never started
        with tempfile.TemporaryDirectory(prefix="bms-fleet-") as workdir:
            fleet.workdir = Path(workdir)
            try:
                fleet.start_all()
                fleet.wait_all()
            finally:
                fleet.gate.close()
                if fleet.running():  # an exception here: leave no pack behind
                    fleet._send(signal.SIGKILL)
                    for pid in fleet._pids():
                        os.waitpid(pid, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for line in fleet.notice.wait():
        print(line, file=sys.stderr)
    return fleet.exit_code()
