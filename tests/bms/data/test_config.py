"""Firmware configuration in TOML: the written defaults read back unchanged; a file may
tighten protection but never loosen it past the chemistry; every bad key is named at once
and nothing of a bad file is applied."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

import bms.data.config_toml as config_toml
from bms.data.config import FirmwareConfig, ProtectionRow, default_config
from bms.data.config_toml import config_to_toml, load_config, parse_config, row_keys
from bms.data.presets import PRESETS
from bms.data.validation import InputError

NFM = PRESETS["na-nfm"]  # cells 1.5..4.1 V, charge -20..55 °C, discharge -40..60 °C, 1C / 3C
N, AH = 16, 1.5


def parse(text: str, chem=NFM, n_series=N, pack_ah=AH) -> FirmwareConfig:
    return parse_config(tomllib.loads(text), "test.toml", chem, n_series, pack_ah)


def problems_of(text: str, **kwargs) -> list[str]:
    with pytest.raises(InputError) as failed:
        parse(text, **kwargs)
    assert failed.value.source == "test.toml"
    return failed.value.problems


def row(cfg: FirmwareConfig, fault: str, level: str) -> ProtectionRow:
    (found,) = [r for r in cfg.protection if (r.fault, r.level) == (fault, level)]
    return found


# --- writing and reading back ---------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize(("n_series", "pack_ah"), [(16, 1.5), (4, 100.0), (1, 0.01), (416, 3.0)])
def test_written_defaults_read_back_equal(preset, n_series, pack_ah):
    chem = PRESETS[preset]
    default = default_config(chem, n_series, pack_ah)
    text = config_to_toml(default, chem)
    assert parse(text, chem, n_series, pack_ah) == default


def test_every_key_is_written_with_a_unit_and_meaning():
    text = config_to_toml(default_config(NFM, N, AH), NFM)
    data = tomllib.loads(text)
    cfg = default_config(NFM, N, AH)
    for f in dataclasses.fields(cfg):
        assert f.name in data, f.name
    assert len(data["protection"]) == len({r.fault for r in cfg.protection})
    key_lines = [line for line in text.splitlines()
                 if line and not line.startswith(("#", "["))]
    assert len(key_lines) > 4 * len(cfg.protection)
    for line in key_lines:
        value_part, sep, comment = line.partition("  # ")
        assert sep and comment.strip(), line
        assert "undocumented" not in comment, line
    assert "max_charge_a = 1.5" in text and "# A: " in text
    assert "[protection.CELL_OVERVOLTAGE.FAULT]" in text
    assert "cell_v_max, highest cell voltage (V), trips above" in text


def test_an_empty_file_gives_the_defaults():
    assert parse("") == default_config(NFM, N, AH)


def test_a_file_sets_only_what_it_names():
    cfg = parse("""
fault_log_size = 50
[balancing]
mode = "off"
[protection.CELL_OVERVOLTAGE.FAULT]
debounce_s = 1.0
""")
    default = default_config(NFM, N, AH)
    assert cfg.fault_log_size == 50
    assert cfg.balancing == dataclasses.replace(default.balancing, mode="off")
    assert row(cfg, "CELL_OVERVOLTAGE", "FAULT") == dataclasses.replace(
        row(default, "CELL_OVERVOLTAGE", "FAULT"), debounce_s=1.0)
    changed = [i for i, (a, b) in enumerate(zip(cfg.protection, default.protection,
                                                strict=True)) if a != b]
    assert len(changed) == 1
    assert (cfg.limits, cfg.precharge, cfg.contactors) == (
        default.limits, default.precharge, default.contactors)


def test_integers_are_accepted_where_numbers_are_expected():
    cfg = parse("[limits]\nmax_charge_a = 1\n[protection.CELL_OVERVOLTAGE.FAULT]\ndebounce_s = 1")
    assert cfg.limits.max_charge_a == 1.0 and isinstance(cfg.limits.max_charge_a, float)
    assert row(cfg, "CELL_OVERVOLTAGE", "FAULT").debounce_s == 1.0


@pytest.mark.parametrize(("text", "field"), [
    ("[protection.SHORT_CIRCUIT.FAULT]\ndebounce_s = 1e9",
     "protection.SHORT_CIRCUIT.FAULT.debounce_s"),
    ("[protection.CELL_OVERVOLTAGE.FAULT]\ndebounce_s = 2.5",
     "protection.CELL_OVERVOLTAGE.FAULT.debounce_s"),
    ("[limits]\nsoc_taper = 0", "limits.soc_taper"),
    ("[limits]\ncharge_taper_v = 0", "limits.charge_taper_v"),
])
def test_a_fault_cannot_be_slowed_nor_a_taper_made_zero(text, field):
    with pytest.raises(InputError) as err:
        parse(text)
    assert any(p.startswith(field + " ") for p in err.value.problems), err.value.problems


# --- tightening and loosening ------------------------------------------------------------


def test_tightening_is_accepted():
    default = default_config(NFM, N, AH)
    oc = row(default, "CHARGE_OVERCURRENT", "FAULT")
    cfg = parse(f"""
[limits]
max_charge_a = 1.0
max_discharge_a = 3.0
[protection.CELL_OVERVOLTAGE.WARNING]
threshold = 4.01
release = 3.9
[protection.CELL_OVERVOLTAGE.ALARM]
threshold = 4.03
release = 3.9
[protection.CELL_OVERVOLTAGE.FAULT]
threshold = 4.05
release = 3.9
[protection.CHARGE_UNDERTEMP.WARNING]
threshold = -6.0
release = -1.0
[protection.CHARGE_UNDERTEMP.ALARM]
threshold = -8.0
release = -3.0
[protection.CHARGE_UNDERTEMP.FAULT]
threshold = -10.0
release = -5.0
[protection.CHARGE_OVERCURRENT.FAULT]
threshold = {oc.threshold - 0.1!r}
""")
    assert (cfg.limits.max_charge_a, cfg.limits.max_discharge_a) == (1.0, 3.0)
    ov = row(cfg, "CELL_OVERVOLTAGE", "FAULT")
    assert (ov.threshold, ov.release, ov.quantity, ov.above) == (4.05, 3.9, "cell_v_max", True)
    assert row(cfg, "CHARGE_UNDERTEMP", "FAULT").threshold == -10.0
    assert row(cfg, "CHARGE_UNDERTEMP", "FAULT").release == -5.0
    assert row(cfg, "CHARGE_OVERCURRENT", "FAULT").threshold == oc.threshold - 0.1


def test_a_voltage_fault_may_move_up_to_the_absolute_limit_but_not_past_it():
    assert row(parse("[protection.CELL_OVERVOLTAGE.FAULT]\nthreshold = 4.1"),
               "CELL_OVERVOLTAGE", "FAULT").threshold == 4.1
    assert problems_of("[protection.CELL_OVERVOLTAGE.FAULT]\nthreshold = 4.1001") == [
        "protection.CELL_OVERVOLTAGE.FAULT.threshold = 4.1001: must be within [1.5, 4.1] "
        "(the chemistry's absolute limits)"]


def test_a_fault_with_no_absolute_limit_cannot_be_loosened():
    default = default_config(NFM, N, AH)
    for fault in ("CHARGE_OVERCURRENT", "DISCHARGE_OVERCURRENT", "SHORT_CIRCUIT"):
        limit = row(default, fault, "FAULT").threshold
        assert row(parse(f"[protection.{fault}.FAULT]\nthreshold = {limit!r}"),
                   fault, "FAULT").threshold == limit
        (problem,) = problems_of(f"[protection.{fault}.FAULT]\nthreshold = {limit + 0.01!r}")
        assert problem.startswith(f"protection.{fault}.FAULT.threshold = ")
        assert f"must be at most the default {limit:g}" in problem


def test_pack_voltage_bounds_follow_the_series_count():
    """A pack threshold valid for 16 cells is beyond the limits of 4."""
    text = "[protection.PACK_OVERVOLTAGE.FAULT]\nthreshold = 64.5\nrelease = 58.0"
    assert row(parse(text), "PACK_OVERVOLTAGE", "FAULT").threshold == 64.5
    assert problems_of(text, n_series=4) == [
        "protection.PACK_OVERVOLTAGE.FAULT.threshold = 64.5: must be within [6, 16.4] "
        "(4 x the chemistry's absolute cell limits)",
        "protection.PACK_OVERVOLTAGE.FAULT.release = 58.0: must be within [6, 16.4] "
        "(4 x the chemistry's absolute cell limits)"]


def test_a_bound_as_shown_in_its_message_is_accepted():
    """3 x 4.1 V is 12.299999999999999 in floats; the message says 12.3, and 12.3 passes."""
    (problem,) = problems_of("[protection.PACK_OVERVOLTAGE.FAULT]\nthreshold = 12.31",
                             n_series=3)
    assert "must be within [4.5, 12.3]" in problem
    cfg = parse("[protection.PACK_OVERVOLTAGE.FAULT]\nthreshold = 12.3", n_series=3)
    assert row(cfg, "PACK_OVERVOLTAGE", "FAULT").threshold == 12.3


@pytest.mark.parametrize(("text", "where"), [
    ("[limits]\nmax_charge_a = -1e-10", "limits.max_charge_a"),
    ("[limits]\nalarm_fraction = -1e-12", "limits.alarm_fraction"),
    ("[protection.CELL_OVERVOLTAGE.FAULT]\ndebounce_s = -1e-12",
     "protection.CELL_OVERVOLTAGE.FAULT.debounce_s"),
])
def test_a_bound_of_zero_is_exact(text, where):
    """The rounding slack is relative to the bound: at 0 there is none, or a maximum
    current of -1e-10 A passed and the firmware published a negative limit."""
    (problem,) = problems_of(text)
    assert problem.startswith(f"{where} = ")


# --- each bad key, named -------------------------------------------------------------------

BAD = [
    ("foo = 1", "foo", "unknown key or table; allowed: ['measurement_timeout_s'"),
    ("limits = 3", "limits", "must be a table"),
    ("[limits]\nmax_charge = 1.0", "limits.max_charge", "allowed: ['max_charge_a'"),
    ("[protection.CELL_OVERVOLT.FAULT]\nthreshold = 4.0", "protection.CELL_OVERVOLT",
     "unknown fault; allowed: ['CELL_OVERVOLTAGE', 'CELL_UNDERVOLTAGE'"),
    ("[protection.PACK_OVERVOLTAGE.WARNING]\nthreshold = 60.0",
     "protection.PACK_OVERVOLTAGE.WARNING", "unknown level; allowed: ['FAULT']"),
    ("[protection.CELL_OVERVOLTAGE.FAULT]\ndelay_s = 1.0",
     "protection.CELL_OVERVOLTAGE.FAULT.delay_s",
     "unknown field; allowed: ['threshold', 'release', 'debounce_s', 'release_s']"),
    ("[protection.CELL_OVERVOLTAGE.FAULT]\nquantity = 'pack_v'",
     "protection.CELL_OVERVOLTAGE.FAULT.quantity", "is fixed by the row (cell_v_max, trips above)"),
    ("[protection.CELL_OVERVOLTAGE]\nFAULT = 4.0", "protection.CELL_OVERVOLTAGE.FAULT",
     "must be a table"),
    ("protection = 1", "protection", "must be a table"),
    ("fault_log_size = 10.5", "fault_log_size", "must be an integer"),
    ("fault_log_size = 0", "fault_log_size", "must be within [1, 65535]"),
    ("fault_log_size = 70000", "fault_log_size", "what the protocol's fault log pages can count"),
    ("rest_current_a = inf", "rest_current_a", "must be a finite number"),
    ("measurement_timeout_s = 0", "measurement_timeout_s", "must be within (0, 10]"),
    ("measurement_timeout_s = 3600", "measurement_timeout_s",
     "a silent rig must open the contactors"),
    ("[limits]\nmax_charge_a = '1.0'", "limits.max_charge_a", "must be a number"),
    ("[limits]\nmax_charge_a = 1.6", "limits.max_charge_a",
     "must be within [0, 1.5] (the chemistry's max charge 1 C x 1.5 Ah)"),
    ("[limits]\nmax_discharge_a = 4.6", "limits.max_discharge_a",
     "must be within [0, 4.5] (the chemistry's max discharge 3 C x 1.5 Ah)"),
    ("[limits]\nalarm_fraction = 1.5", "limits.alarm_fraction", "must be within [0, 1]"),
    ("[precharge]\nretries = -1", "precharge.retries", "must be within [0, 10]"),
    ("[precharge]\nretries = true", "precharge.retries", "must be an integer"),
    ("[contactors]\nweld_bus_fraction = 1.0", "contactors.weld_bus_fraction",
     "must be within (0, 1)"),
    ("[balancing]\nmode = 'passive'", "balancing.mode",
     "must be one of ['off', 'voltage', 'soc']"),
    ("[balancing]\nmode = 1", "balancing.mode", "must be a string"),
    ("[balancing]\nwhen = 'night'", "balancing.when",
     "must be one of ['rest', 'charge', 'always']"),
    ("[balancing]\nstop_mv = 12.0", "balancing.stop_mv", "must be below balancing.start_mv (10)"),
    ("[balancing]\nstart_mv = 4.0", "balancing.start_mv", "must be above balancing.stop_mv (5)"),
    ("[balancing]\nmax_cells = 0", "balancing.max_cells", "must be at least 1"),
    ("[balancing]\nmin_cell_v = 1.0", "balancing.min_cell_v",
     "must be within [1.5, 4.1] (the chemistry's absolute limits)"),
    ("[protection.CELL_OVERVOLTAGE.FAULT]\nthreshold = 4.3",
     "protection.CELL_OVERVOLTAGE.FAULT.threshold",
     "must be within [1.5, 4.1] (the chemistry's absolute limits)"),
    ("[protection.CELL_UNDERVOLTAGE.WARNING]\nthreshold = 1.4",
     "protection.CELL_UNDERVOLTAGE.WARNING.threshold",
     "must be within [1.5, 4.1] (the chemistry's absolute limits)"),
    ("[protection.PACK_UNDERVOLTAGE.FAULT]\nthreshold = 20.0",
     "protection.PACK_UNDERVOLTAGE.FAULT.threshold",
     "must be within [24, 65.6] (16 x the chemistry's absolute cell limits)"),
    ("[protection.CHARGE_OVERTEMP.FAULT]\nthreshold = 60.0",
     "protection.CHARGE_OVERTEMP.FAULT.threshold",
     "must be within [-20, 55] (the chemistry's charge temperature limits)"),
    ("[protection.CHARGE_UNDERTEMP.ALARM]\nthreshold = -25.0",
     "protection.CHARGE_UNDERTEMP.ALARM.threshold",
     "must be within [-20, 55] (the chemistry's charge temperature limits)"),
    ("[protection.DISCHARGE_UNDERTEMP.FAULT]\nthreshold = -45.0",
     "protection.DISCHARGE_UNDERTEMP.FAULT.threshold",
     "must be within [-40, 60] (the chemistry's discharge temperature limits)"),
    ("[protection.CELL_OVERVOLTAGE.FAULT]\nrelease = 4.09",
     "protection.CELL_OVERVOLTAGE.FAULT.release", "must be below the threshold (4.08)"),
    ("[protection.CELL_UNDERVOLTAGE.FAULT]\nrelease = 1.7",
     "protection.CELL_UNDERVOLTAGE.FAULT.release", "must be above the threshold (1.8)"),
    ("[protection.CELL_UNDERVOLTAGE.FAULT]\nthreshold = 2.3",
     "protection.CELL_UNDERVOLTAGE.FAULT.threshold",
     "must be below the release (2.2); set a release too"),
    ("[protection.CELL_OVERVOLTAGE.FAULT]\nrelease = 1.0",
     "protection.CELL_OVERVOLTAGE.FAULT.release",
     "must be within [1.5, 4.1] (the chemistry's absolute limits)"),
    ("[protection.CELL_OVERVOLTAGE.FAULT]\ndebounce_s = -0.5",
     "protection.CELL_OVERVOLTAGE.FAULT.debounce_s", "must be at least 0"),
    ("[protection.CHARGE_OVERTEMP.WARNING]\nrelease_s = -1",
     "protection.CHARGE_OVERTEMP.WARNING.release_s", "must be at least 0"),
    ("[protection.CELL_OVERVOLTAGE.FAULT]\nthreshold = true",
     "protection.CELL_OVERVOLTAGE.FAULT.threshold", "must be a number"),
    ("[protection.CELL_IMBALANCE.WARNING]\nthreshold = 0.0",
     "protection.CELL_IMBALANCE.WARNING.threshold", "must be above 0"),
    ("[protection.CHARGE_OVERCURRENT.ALARM]\nrelease = -1.0",
     "protection.CHARGE_OVERCURRENT.ALARM.release", "must be at least 0"),
]


@pytest.mark.parametrize(("text", "where", "allowed"), BAD, ids=[b[1] for b in BAD])
def test_each_bad_key_is_named_with_its_value_and_what_is_allowed(text, where, allowed):
    (problem,) = problems_of(text)
    assert problem.startswith(f"{where} = "), problem
    assert allowed in problem, problem


def test_every_problem_is_listed_at_once():
    with pytest.raises(InputError) as failed:
        parse("""
fault_log_size = -3
colour = "red"
[limits]
max_charge_a = 99.0
[balancing]
mode = "passive"
[protection.CELL_OVERVOLTAGE.FAULT]
threshold = 4.3
debounce_s = -1.0
[protection.NO_SUCH_FAULT.FAULT]
threshold = 1.0
""")
    err = failed.value
    wheres = sorted(p.split(" = ")[0] for p in err.problems)
    assert wheres == sorted([
        "fault_log_size", "colour", "limits.max_charge_a", "balancing.mode",
        "protection.CELL_OVERVOLTAGE.FAULT.threshold",
        "protection.CELL_OVERVOLTAGE.FAULT.debounce_s", "protection.NO_SUCH_FAULT"])
    assert str(err).startswith("test.toml: 7 problem(s)")


def test_nothing_of_a_bad_file_is_applied(tmp_path):
    """One bad key refuses the whole file: the good keys beside it are not applied either,
    and only the bad one is reported."""
    good = "fault_log_size = 50\n[protection.CELL_OVERVOLTAGE.FAULT]\nthreshold = 4.06\n"
    path = tmp_path / "fw.toml"
    path.write_text(good + "[limits]\nmax_charge_a = 99.0\n")
    with pytest.raises(InputError) as failed:
        load_config(path, NFM, N, AH)
    assert [p.split(" = ")[0] for p in failed.value.problems] == ["limits.max_charge_a"]
    path.write_text(good)
    cfg = load_config(path, NFM, N, AH)
    assert cfg.fault_log_size == 50
    assert row(cfg, "CELL_OVERVOLTAGE", "FAULT").threshold == 4.06


def test_unreadable_files_and_bad_toml_are_named(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(InputError, match="cannot read the file") as failed:
        load_config(missing, NFM, N, AH)
    assert failed.value.source == str(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[limits\nmax_charge_a = 1\n")
    with pytest.raises(InputError, match="not valid TOML") as failed:
        load_config(broken, NFM, N, AH)
    assert failed.value.source == str(broken)


# --- two rows of one fault at one level ------------------------------------------------------

SENSOR_ROWS = (
    ProtectionRow("VOLTAGE_SENSOR_FAULT", "FAULT", "cell_v_max", True, 4.4, 4.1, 0.5, 1.0),
    ProtectionRow("VOLTAGE_SENSOR_FAULT", "FAULT", "cell_v_min", False, -0.1, 0.0, 0.5, 1.0),
)


@pytest.fixture
def with_sensor_rows(monkeypatch):
    """Defaults holding one fault with two FAULT rows, told apart by their quantity."""
    real = config_toml.default_config

    def defaults(chem, n_series, pack_capacity_ah):
        cfg = real(chem, n_series, pack_capacity_ah)
        rows = [r for r in cfg.protection if r.fault != "VOLTAGE_SENSOR_FAULT"]
        return dataclasses.replace(cfg, protection=(*rows, *SENSOR_ROWS))

    monkeypatch.setattr(config_toml, "default_config", defaults)
    return defaults


def test_rows_sharing_a_fault_and_level_are_keyed_by_quantity(with_sensor_rows):
    cfg = with_sensor_rows(NFM, N, AH)
    keys = row_keys(cfg.protection)
    assert keys[-2:] == [("VOLTAGE_SENSOR_FAULT", "FAULT", "cell_v_max"),
                         ("VOLTAGE_SENSOR_FAULT", "FAULT", "cell_v_min")]
    assert ("CELL_OVERVOLTAGE", "FAULT") in keys
    assert parse(config_to_toml(cfg, NFM)) == cfg
    changed = parse("[protection.VOLTAGE_SENSOR_FAULT.FAULT.cell_v_min]\nthreshold = -0.05")
    assert changed.protection[-1].threshold == -0.05
    assert changed.protection[-2] == SENSOR_ROWS[0]


def test_a_shared_row_must_be_named_by_quantity_and_never_loosened(with_sensor_rows):
    (problem,) = problems_of("[protection.VOLTAGE_SENSOR_FAULT.FAULT]\nthreshold = 4.5")
    assert problem.startswith("protection.VOLTAGE_SENSOR_FAULT.FAULT.threshold = 4.5: "
                              "unknown quantity; allowed: ['cell_v_max', 'cell_v_min']")
    (problem,) = problems_of("[protection.VOLTAGE_SENSOR_FAULT.FAULT.cell_v_min]\n"
                             "threshold = -0.5")
    assert problem.startswith("protection.VOLTAGE_SENSOR_FAULT.FAULT.cell_v_min.threshold = "
                              "-0.5: must be at least the default -0.1")


def test_a_default_as_shown_in_its_message_is_accepted(with_sensor_rows, monkeypatch):
    """A FAULT default of 4.1 + 0.3 = 4.3999999999999995 is shown, and accepted, as 4.4."""
    rows = (dataclasses.replace(SENSOR_ROWS[0], threshold=4.1 + 0.3), SENSOR_ROWS[1])
    monkeypatch.setattr(config_toml, "default_config", lambda *a: dataclasses.replace(
        with_sensor_rows(*a), protection=rows))
    (problem,) = problems_of("[protection.VOLTAGE_SENSOR_FAULT.FAULT.cell_v_max]\n"
                             "threshold = 4.41")
    assert "must be at most the default 4.4 " in problem
    cfg = parse("[protection.VOLTAGE_SENSOR_FAULT.FAULT.cell_v_max]\nthreshold = 4.4")
    assert cfg.protection[0].threshold == 4.4


@pytest.mark.parametrize(("data", "named"), [
    ({"rest_current_a": 1e9}, "rest_current_a"),  # would switch off the charge-temp rows
    ({"precharge": {"done_fraction": 1e-6}}, "precharge.done_fraction"),
    ({"precharge": {"done_current_a": 1e9}}, "precharge.done_current_a"),
    ({"precharge": {"timeout_s": 1e9}}, "precharge.timeout_s"),
    ({"precharge": {"retries": 2_000_000_000}}, "precharge.retries"),
    ({"contactors": {"weld_check_s": 1e9}}, "contactors.weld_check_s"),
    ({"contactors": {"weld_current_a": 1e9}}, "contactors.weld_current_a"),
    ({"lockout_trips": 10**6}, "lockout_trips"),
    ({"protection": {"CELL_OVERVOLTAGE": {"WARNING": {"threshold": 4.07}}}},
     "protection.CELL_OVERVOLTAGE.WARNING.threshold"),
    ({"protection": {"CELL_UNDERVOLTAGE": {"ALARM": {"threshold": 1.95, "release": 2.2}}}},
     "protection.CELL_UNDERVOLTAGE.ALARM.threshold"),
    # A full pack at rest (4.0 V a cell) would be an over-voltage.
    ({"protection": {"CELL_OVERVOLTAGE": {"WARNING": {"threshold": 3.99, "release": 3.9}}}},
     "protection.CELL_OVERVOLTAGE.WARNING.threshold"),
    ({"protection": {"PACK_OVERVOLTAGE": {"FAULT": {"threshold": 63.9, "release": 62.0}}}},
     "protection.PACK_OVERVOLTAGE.FAULT.threshold"),
])
def test_a_value_that_would_defeat_protection_is_refused(data, named):
    """Every parameter has a safe range, and a WARNING trips before its ALARM before its
    FAULT in the direction of danger: a value past either is refused, naming it."""
    chem = PRESETS["na-nfm"]
    with pytest.raises(InputError) as caught:
        parse_config(data, "host", chem, 16, chem.capacity_ah)
    assert any(p.startswith(named + " = ") for p in caught.value.problems), caught.value


def test_levels_may_be_moved_together_in_order():
    chem = PRESETS["na-nfm"]
    cfg = parse_config({"protection": {"CELL_OVERVOLTAGE": {
        "WARNING": {"threshold": 4.01, "release": 3.9},
        "ALARM": {"threshold": 4.02, "release": 3.92}}}}, "host", chem, 16, chem.capacity_ah)
    over = {r.level: r.threshold for r in cfg.protection if r.fault == "CELL_OVERVOLTAGE"}
    assert over["WARNING"] == 4.01 and over["ALARM"] == 4.02


def test_an_over_voltage_row_at_or_below_a_full_cell_is_refused():
    """100 % is the cell charged to 4.0 V: a row there would make a full pack at rest an
    over-voltage. Just above it is a tightening like any other."""
    assert problems_of("[protection.CELL_OVERVOLTAGE.WARNING]\nthreshold = 4.0\n"
                       "release = 3.9") == [
        "protection.CELL_OVERVOLTAGE.WARNING.threshold = 4.0: must be above 4 (a full cell's "
        "rest voltage, the OCV at 100 %: a full pack at rest would be an over-voltage)"]
    assert problems_of("[protection.PACK_OVERVOLTAGE.FAULT]\nthreshold = 64.0\n"
                       "release = 62.0") == [
        "protection.PACK_OVERVOLTAGE.FAULT.threshold = 64.0: must be above 64 (16 x a full "
        "cell's rest voltage: a full pack at rest would be an over-voltage)"]
    cfg = parse("[protection.CELL_OVERVOLTAGE.WARNING]\nthreshold = 4.005\nrelease = 3.9")
    assert row(cfg, "CELL_OVERVOLTAGE", "WARNING").threshold == 4.005
