"""`bms-emu plot`: draw a recorded run."""

from __future__ import annotations

from pathlib import Path

from bms.data.validation import Problems
from bms_emu.output_paths import check_output_path


def add_parser(sub) -> None:
    p = sub.add_parser("plot",
                       description="Draw a CSV written by `bms-emu run --record` as one figure: "
                       "pack voltage and current with limits, SoC (estimated and true), cell "
                       "voltages, temperatures, state, faults and balancing.")
    p.add_argument("csv", metavar="RUN.csv", help="recorded run")
    p.add_argument("-o", "--output", metavar="RUN.png",
                   help="image to write (default: the CSV's name with .png)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from hil.plot import image_types, plot_run

    output = args.output or str(Path(args.csv).with_suffix(".png"))
    problems = Problems("bms-emu plot")
    check_output_path(problems, "--output", output, image_types())
    problems.raise_if_any()
    plot_run(args.csv, output)
    print(output)
    return 0
