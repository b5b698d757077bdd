"""The SunSpec map without a socket: every point of every model accounted for, the image
decoded by pysunspec2's own model classes into what the device's Status says, "not
implemented" where there is nothing to say yet, scale factors chosen for the pack, and
writes taken only whole and only with values the point takes."""

from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path

import pytest
import sunspec2
from pymodbus.constants import ExcCodes
from sunspec2.device import Model

from bms.links.modbus.pack_view import nameplate_of, view_of
from bms.links.modbus.register_map import SOURCES, SunSpecMap, WriteRefused
from bms.links.modbus.sunspec_layout import (
    MODELS_DIR,
    NOT_IMPLEMENTED,
    Point,
    points_of,
    registers,
)
from bms.links.modbus.sunspec_points import FILLS, MODELS, UNIMPLEMENTED, WRITES, point
from protocol import messages as pm
from tests.bms.links.modbus.pack_bench import (
    CELLS_PER_SENSOR,
    CELLS_V,
    PACK_ID,
    TEMPS_C,
    UNIT,
    Bench,
)

MECHANISM = ("ID", "L")  # filled by the layout, as are scale factors and pads


def sunspec_map(bench: Bench, **changes) -> SunSpecMap:
    plate = nameplate_of(bench.device, PACK_ID, UNIT, CELLS_PER_SENSOR, remote_control=False)
    return SunSpecMap(dataclasses.replace(plate, **changes))


def decoded(bench: Bench) -> dict[int, Model]:
    """The image as pysunspec2 reads it, model by model."""
    m = sunspec_map(bench)
    image = m.image(view_of(bench.device, m.plate, bench.now_s))
    out = {}
    for block in m.layout.models:
        start = block.address - m.base
        regs = image[start:start + 2 + block.length]
        model = Model(model_id=block.model_id, model_addr=block.address,
                      model_len=block.length, data=struct.pack(f">{len(regs)}H", *regs))
        assert not model.error_info, model.error_info
        out[block.model_id] = model
    return out


def test_the_shipped_definitions_are_pysunspec2s_own():
    installed = Path(sunspec2.__file__).parent / "models" / "json"
    for model_id in MODELS:
        name = f"model_{model_id}.json"
        assert (MODELS_DIR / name).read_bytes() == (installed / name).read_bytes(), name


def test_every_point_is_filled_or_left_unimplemented_with_a_reason():
    keys = [p.key for model_id in MODELS for p in points_of(model_id)
            if p.name not in MECHANISM and p.type not in ("sunssf", "pad")]
    filled = [key for fill in FILLS for key in fill.points]
    assert len(filled) == len(set(filled))  # each point filled from one place
    assert set(SOURCES) & set(UNIMPLEMENTED) == set()
    assert sorted(set(SOURCES) | set(UNIMPLEMENTED)) == sorted(keys)  # none missing, none extra
    assert all(reason for reason in UNIMPLEMENTED.values())


def test_only_the_documented_mandatory_point_is_left_unimplemented():
    mandatory = {p.key for model_id in MODELS for p in points_of(model_id) if p.mandatory}
    assert mandatory & set(UNIMPLEMENTED) == {"802.SetInvState"}


def test_writes_are_only_to_points_sunspec_lets_a_client_write():
    writable = {p.key for model_id in MODELS for p in points_of(model_id) if p.writable}
    assert set(WRITES) <= writable


def test_pysunspec2_decodes_the_image_into_what_status_says():
    bench = Bench()
    bench.run(temps=TEMPS_C)
    bench.step(current_a=0.8, n=10)
    status = bench.status()
    models = decoded(bench)
    battery, bank, module = models[802], models[803], models[805]
    assert battery.SoC.cvalue == pytest.approx(status.soc_pct, abs=0.005)
    assert battery.AChaMax.cvalue == pytest.approx(status.charge_limit_a, abs=0.005)
    assert battery.VMax.cvalue == pytest.approx(status.charge_voltage_limit_v, abs=0.005)
    assert battery.A.cvalue == pytest.approx(0.8, abs=0.005)
    assert battery.ChaSt.value == point("802.ChaSt").symbols["CHARGING"]
    assert bank.ModTmpMax.cvalue == 27.5 and bank.ModTmpMin.cvalue == 24.0
    assert bank.NStrCon.value == 1  # the main contactors closed
    cells = module.groups["lithium-ion-module-cell"]
    assert [round(c.CellV.cvalue, 3) for c in cells] == pytest.approx(CELLS_V, abs=2e-4)
    assert [c.CellTmp.cvalue for c in cells] == [24.0, 24.0, 27.5, 27.5]  # a sensor a pair
    assert models[1].Md.cvalue == "na-nfm 4s2p"


def test_before_the_first_measurement_the_readings_are_not_implemented():
    bench = Bench()
    m = sunspec_map(bench)
    image = m.image(view_of(bench.device, m.plate, 0.0))
    raw = {s.point.key: image[s.address - m.base] for s in m.layout.slots()}
    assert raw["802.SoC"] == raw["802.V"] == raw["802.CellVMax"] == 0xFFFF
    assert raw["802.A"] == raw["803.ModTmpMax"] == 0x8000
    assert raw["802.SoCMax"] != 0xFFFF  # what is known without a measurement is there


def test_scale_factors_follow_the_pack():
    bench = Bench()
    small, middle, big = (sunspec_map(bench, n_series=n) for n in (4, 16, 512))
    assert small.exponents["V_SF"] == -3  # 4 cells, 16.4 V: to 1 mV
    assert middle.exponents["V_SF"] == -2  # 16 cells, 65.6 V: to 10 mV
    assert big.exponents["V_SF"] == -1  # 512 cells, 2099 V: to 0.1 V
    for m in (small, middle, big):
        fits = 2 * m.plate.n_series * m.plate.max_cell_v / 10 ** m.exponents["V_SF"]
        assert fits <= 0xFFFE


@pytest.mark.parametrize(("kind", "value", "exponent", "expected"), [
    ("uint16", 3.5049, -3, [3505]),
    ("uint16", 1e9, 0, [0xFFFE]),  # held at the range's end, never "not implemented"
    ("int16", -1.25, -2, [0x10000 - 125]),
    ("int16", math.nan, -2, [0x8000]),
    ("uint16", None, None, [0xFFFF]),
    ("uint32", 70000, None, [1, 70000 - 65536]),
    ("string", "na-nfm", None, [0x6E61, 0x2D6E, 0x666D, 0]),
])
def test_values_become_registers_as_sunspec_says(kind, value, exponent, expected):
    size = len(expected)
    p = Point(802, "X", kind, size, None, False, False, "", "X", {})
    assert registers(p, value, exponent) == expected


def test_writes_are_taken_whole_with_values_the_point_takes():
    m = sunspec_map(Bench())
    at = {s.point.key: s.address for s in m.layout.slots()}
    (w,) = m.writes(at["802.SetOp"], [2])
    assert (w.request.command, w.request.argument) == (pm.Command.STANDBY, 0)
    (w,) = m.writes(at["804.SetCon"], [1])
    assert (w.request.command, w.request.argument) == (pm.Command.RUN, 0)
    refusals = {}
    for what, (address, values) in {
            "SoC": (at["802.SoC"], [1]), "SetOp = 0": (at["802.SetOp"], [0]),
            "NCyc, half": (at["802.NCyc"] + 1, [0]), "beyond the end": (
                m.layout.end_address - 1, [0])}.items():
        with pytest.raises(WriteRefused) as caught:
            m.writes(address, values)
        refusals[what] = caught.value.code
    assert refusals == {"SoC": ExcCodes.ILLEGAL_ADDRESS, "SetOp = 0": ExcCodes.ILLEGAL_VALUE,
                        "NCyc, half": ExcCodes.ILLEGAL_ADDRESS,
                        "beyond the end": ExcCodes.ILLEGAL_ADDRESS}


def test_the_not_implemented_values_are_sunspecs():
    assert (NOT_IMPLEMENTED["uint16"], NOT_IMPLEMENTED["int16"], NOT_IMPLEMENTED["sunssf"],
            NOT_IMPLEMENTED["bitfield32"]) == (0xFFFF, 0x8000, 0x8000, 0xFFFF_FFFF)
