"""The CAN options and `bms-emu can-dbc`: a DBC any tool loads, and bad options refused
before anything runs (exit 2, naming the value and what is allowed)."""

from __future__ import annotations

import cantools
import pytest

from bms.links.can.frame_sets import NAMES, frame_set
from bms_emu.main import main


@pytest.mark.parametrize("name", NAMES)
def test_can_dbc_prints_the_frame_set_cantools_loads(name, capsys):
    assert main(["can-dbc", name]) == 0
    db = cantools.database.load_string(capsys.readouterr().out, "dbc", strict=True)
    ours = frame_set(name).db
    assert [(m.frame_id, m.name, m.length) for m in db.messages] == [
        (m.frame_id, m.name, m.length) for m in ours.messages]


@pytest.mark.parametrize(("argv", "words"), [
    (["serve", "--sim", "--serial", "/dev/null", "--can", "can0"],
     "--can = 'can0': must be INTERFACE:CHANNEL[@BITRATE], e.g. socketcan:can0"),
    (["serve", "--sim", "--serial", "/dev/null", "--can", "slcan:/dev/ttyACM0@5"],
     "bitrate '5' must be a whole number of bit/s within [10000, 1000000]"),
    (["run", "--can", "virtual:bench"],
     "--speed = 'max': a run with --can is paced: give a number"),
    (["fleet", "--packs", "2", "--mqtt", "mqtt://localhost:1883", "--can", "virtual:bench"],
     "--can = 'virtual:bench': a CAN bus carries one battery's frame set"),
])
def test_bad_can_options_are_refused_before_anything_runs(argv, words, capsys):
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_an_unknown_frame_set_is_refused_with_the_names(capsys):
    with pytest.raises(SystemExit) as refused:
        main(["serve", "--sim", "--serial", "/dev/null", "--can", "virtual:x",
              "--can-protocol", "pylon"])
    assert refused.value.code == 2
    assert "choose from 'pylon-lv', 'pylon-hv'" in capsys.readouterr().err
