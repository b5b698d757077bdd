"""`bms-emu pty`: a linked pair of pseudo-terminals, so that `serve --hil` and `rig` (or
`serve` and `query`) can talk over a serial link on one machine without socat."""

from __future__ import annotations

from bms_emu.lifetime import run_until_signalled
from hil.pty_pair import PtyPair


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pty",
        description="Create two pseudo-terminals linked like a null-modem cable, print their "
        "paths (one per line) and relay bytes between them until interrupted. Give --link "
        "twice to have stable names (symlinks) instead of /dev/pts/N.")
    p.add_argument("--link", action="append", default=[], metavar="PATH",
                   help="symlink to create for the first, then the second end")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from bms.data.validation import InputError

    if len(args.link) not in (0, 2):
        raise InputError("bms-emu pty", [f"--link given {len(args.link)} time(s): give it "
                                         "twice (one per end) or not at all"])
    links = tuple(args.link) if args.link else (None, None)
    pair = PtyPair(links)
    print(pair.paths[0])
    print(pair.paths[1], flush=True)
    # On SIGINT or SIGTERM the ends hang up and the --link symlinks go, so that nothing is
    # left pointing at a pty number the system will hand out again.
    run_until_signalled(pair.relay())
    return 0
