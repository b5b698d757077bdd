"""The persistent store from the command line: `run --nvm` across restarts, `serve`'s
default store, and `bms-emu nvm show|export|reset`."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest

from bms.store.nvm import SCHEMA_VERSION
from tests.bms.store.test_integrity import DAMAGE, files
from tests.support.processes import CLI, Proc


def bms_emu(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, input=stdin,
                          timeout=120)


def run(store, *args: str) -> dict:
    done = bms_emu("run", "--series", "4", "--nvm", str(store), "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def export(store) -> dict:
    done = bms_emu("nvm", "export", str(store))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_run_resumes_its_store_and_counts_on(tmp_path):
    store = tmp_path / "pack.sqlite"
    run(store, "--duration", "10m", "--profile", "current:-1.5")
    first = export(store)
    run(store, "--duration", "10m", "--profile", "current:-1.5")
    second = export(store)
    assert [b["boot"] for b in second["boots"]] == [1, 2]
    c1, c2 = first["saved"]["counters"], second["saved"]["counters"]
    assert c1["charge_out_ah"] == pytest.approx(0.25 * 0.99, rel=0.05)  # 1.5 A for 10 min
    assert c2["charge_out_ah"] == pytest.approx(2 * c1["charge_out_ah"], rel=0.05)
    assert c2["contactor_cycles"] == 2 and c1["contactor_cycles"] == 1
    assert c2["time_in_state_s"]["RUN"] > c1["time_in_state_s"]["RUN"] + 590
    assert second["saved"]["reason"] == "shutdown" and second["saved"]["boot"] == 2
    assert second["saved"]["saved_at_s"] == pytest.approx(600.0 - 0.1)
    assert len(second["saved"]["cell_soc_pct"]) == 4


def test_without_nvm_a_run_keeps_nothing(tmp_path, own_data_dir):
    done = bms_emu("run", "--series", "4", "--duration", "1m", "--quiet")
    assert done.returncode == 0, done.stderr
    assert not (own_data_dir / "bms-emu").exists()


def test_show_summarises_and_export_writes_a_file(tmp_path):
    store = tmp_path / "pack.sqlite"
    run(store, "--duration", "5m", "--inject", "60:temp-sensor-open:sensor=1")
    shown = bms_emu("nvm", "show", str(store))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"schema version {SCHEMA_VERSION}" in text
    assert "pack: 4 cells of na-nfm" in text
    assert "latched: TEMP_SENSOR_FAULT" in text
    assert "FAULT   TEMP_SENSOR_FAULT sensor 1 raised" in text
    out = tmp_path / "export.json"
    assert bms_emu("nvm", "export", str(store), "-o", str(out)).returncode == 0
    data = json.loads(out.read_text())
    assert data["saved"]["latched_rows"] == [["TEMP_SENSOR_FAULT", "temp_reading_min", False]]
    assert [e["name"] for e in data["fault_log"]] == ["TEMP_SENSOR_FAULT"]
    assert (data["fault_log"][0]["sensor"], data["fault_log"][0]["cell"]) == (1, None)


def test_show_and_export_number_the_faulty_cell_from_1(tmp_path):
    """Issue 16: the store keeps the 0-based index; what `nvm` prints says `cell 3`."""
    store = tmp_path / "pack.sqlite"
    run(store, "--duration", "2m", "--inject", "30:sensor-offset:cell=3,offset_v=0.6")
    shown = bms_emu("nvm", "show", str(store))
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines()
             if line.startswith("  boot") and "CELL_OVERVOLTAGE" in line]
    assert lines and all("CELL_OVERVOLTAGE cell 3 raised" in line for line in lines), lines
    log = export(store)["fault_log"]
    over = [e for e in log if e["name"] == "CELL_OVERVOLTAGE"]
    assert over and all((e["cell"], e["sensor"]) == (3, None) for e in over), over
    assert not any("cell_index" in e for e in log)


def test_a_latched_fault_keeps_the_next_run_open(tmp_path):
    store = tmp_path / "pack.sqlite"
    run(store, "--duration", "2m", "--inject", "30:temp-sensor-open:sensor=1")
    # the sensor is fine in the next run; the fault is still latched: contactors stay open
    summary = run(store, "--duration", "2m")
    assert summary["final"]["state"] == "FAULT"
    assert summary["final"]["contactors"] == "open"
    assert summary["events"] == []  # nothing raised anew: it was raised before the restart


def test_reset_asks_first_and_refuses_without_an_answer(tmp_path):
    store = tmp_path / "pack.sqlite"
    run(store, "--duration", "1m")
    refused = bms_emu("nvm", "reset", str(store), stdin="")
    assert refused.returncode == 1 and "give --yes" in refused.stderr
    assert store.exists()
    done = bms_emu("nvm", "reset", str(store), "--yes")
    assert done.returncode == 0 and not store.exists()
    assert run(store, "--duration", "1m")["final"]["state"] != "FAULT"


@pytest.mark.parametrize("case", ["missing", "newer", "foreign"])
def test_nvm_refuses_what_is_not_a_readable_store_and_changes_nothing(tmp_path, case):
    store = tmp_path / "pack.sqlite"
    if case == "newer":
        run(store, "--duration", "1m")
        db = sqlite3.connect(store)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.close()
    elif case == "foreign":
        store.write_text("some notes, not a database\n" * 50)
    before = store.read_bytes() if store.exists() else None
    for action in ("show",) if case == "newer" else ("show", "reset"):  # reset: a store's
        done = bms_emu("nvm", action, str(store), "--yes")
        assert done.returncode == 2
        assert str(store) in done.stderr
        assert {"missing": "does not exist", "newer": "from a newer bms-emu",
                "foreign": "not"}[case] in done.stderr
    assert (store.read_bytes() if store.exists() else None) == before
    if case == "newer":  # and the emulator refuses it too, before doing anything
        done = bms_emu("run", "--series", "4", "--nvm", str(store), "--duration", "1m")
        assert done.returncode == 2 and "from a newer bms-emu" in done.stderr
        assert store.read_bytes() == before


def test_serve_keeps_its_store_in_the_data_directory_and_holds_it(tmp_path, own_data_dir):
    from hil.pty_pair import PtyPair

    pair = PtyPair()
    try:
        serve = Proc("serve", "--sim", "--serial", pair.paths[0], "--series", "4",
                     "--pack-id", "ups-7", "--tick", "0.05")
        serve.wait_for("store")
        store = own_data_dir / "bms-emu" / "nvm" / "ups-7-sim.sqlite"
        assert serve.said(f"store {store}: new")
        second = bms_emu("serve", "--sim", "--serial", pair.paths[1], "--series", "4",
                         "--pack-id", "ups-7", "--duration", "1")
        assert second.returncode == 2 and "in use by a running emulator" in second.stderr
        shown = bms_emu("nvm", "show", str(store))
        assert shown.returncode == 2 and "in use" in shown.stderr
        serve.stop()  # SIGTERM: a clean stop saves
        assert export(store)["saved"]["reason"] == "shutdown"
        again = Proc("serve", "--sim", "--serial", pair.paths[0], "--series", "4",
                     "--pack-id", "ups-7", "--tick", "0.05")
        again.wait_for("store")
        assert again.said("resumed boot 1's save")
        again.stop()
        fresh = bms_emu("serve", "--sim", "--serial", pair.paths[0], "--series", "4",
                        "--pack-id", "ups-7", "--no-nvm", "--duration", "0.5")
        assert fresh.returncode == 0 and "store" not in fresh.stdout
        assert len(export(store)["boots"]) == 2
    finally:
        pair.close()


def one_line_refusal(done: subprocess.CompletedProcess, store) -> str:
    """A refusal: exit code 2 and one line naming the store; that line."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and str(store) in lines[0], done.stderr
    return lines[0]


@pytest.mark.parametrize("case", ["random bytes inside", "a 0-byte file"])  # all: test_integrity
def test_a_damaged_store_is_refused_in_one_line_unchanged_until_reset(tmp_path, case):
    store = tmp_path / "pack.sqlite"
    run(store, "--duration", "1m", "--inject", "30:temp-sensor-open:sensor=1")
    damage, words = DAMAGE[case]
    damage(store)
    before = files(tmp_path)
    for argv in (("run", "--series", "4", "--nvm", str(store), "--duration", "1m"),
                 ("nvm", "show", str(store))):
        line = one_line_refusal(bms_emu(*argv), store)
        assert words in line and f"run `bms-emu nvm reset {store}` to start afresh" in line
        assert files(tmp_path) == before
    done = bms_emu("nvm", "reset", str(store), "--yes")
    assert done.returncode == 0, done.stderr
    fresh = run(store, "--duration", "1m")
    assert fresh["final"]["state"] != "FAULT"  # afresh: nothing latched from before
    assert [b["boot"] for b in export(store)["boots"]] == [1]


@pytest.mark.parametrize("other", [("--series", "8"), ("--pack-id", "rack-2")])
def test_a_store_of_another_pack_is_refused_in_one_line_unchanged(tmp_path, other):
    store = tmp_path / "pack.sqlite"
    run(store, "--duration", "1m", "--pack-id", "rack-1")
    before = files(tmp_path)
    done = bms_emu("run", "--series", "4", "--pack-id", "rack-1", "--nvm", str(store),
                   "--duration", "1m", *other)  # the last of a repeated option counts
    line = one_line_refusal(done, store)
    assert "belongs to pack rack-1 (sim, 4 cells of na-nfm, 1.5 Ah), not to this pack" in line
    assert "bms-emu nvm reset" in line
    assert files(tmp_path) == before
    assert "pack id rack-1 (sim)" in bms_emu("nvm", "show", str(store)).stdout


def test_serve_sim_after_serve_hil_is_a_new_store_not_the_rigs(tmp_path, own_data_dir):
    """The README's session: `serve --hil` with a rig, then `serve --sim` on the same port
    (the same default pack id). Each mode has its own default store; given the rig's store,
    `serve --sim` refuses it."""
    from hil.pty_pair import PtyPair

    pair = PtyPair()
    try:
        said = {}
        for mode in ("--hil", "--sim"):
            done = bms_emu("serve", mode, "--serial", pair.paths[0], "--series", "4",
                           "--duration", "0.5")
            assert done.returncode == 0, done.stderr
            said[mode] = done.stdout
        nvm = own_data_dir / "bms-emu" / "nvm"
        pack_id = next(nvm.glob("*-hil.sqlite")).name.removesuffix("-hil.sqlite")
        assert f"store {nvm / (pack_id + '-hil.sqlite')}: new" in said["--hil"]
        assert f"store {nvm / (pack_id + '-sim.sqlite')}: new" in said["--sim"]
        hil_store = nvm / f"{pack_id}-hil.sqlite"
        refused = bms_emu("serve", "--sim", "--serial", pair.paths[0], "--series", "4",
                          "--duration", "0.5", "--nvm", str(hil_store))
        line = one_line_refusal(refused, hil_store)
        assert f"belongs to pack {pack_id} (hil, 4 cells" in line
        assert f"not to this pack {pack_id} (sim, 4 cells" in line
    finally:
        pair.close()
