"""`bms-emu plot`: draw a recorded run."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a recorded run as a multi-panel PNG",
                       description="Draw a CSV written by `bms-emu run --record` as one figure: "
                       "pack voltage and current with limits, SoC (estimated and true), cell "
                       "voltages, temperatures, state, faults and balancing.")
    p.add_argument("csv", metavar="RUN.csv", help="recorded run")
    p.add_argument("-o", "--output", metavar="RUN.png",
                   help="image to write (default: the CSV's name with .png)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from hil.plot import plot_run

    output = args.output or str(Path(args.csv).with_suffix(".png"))
    plot_run(args.csv, output)
    print(output)
    return 0
