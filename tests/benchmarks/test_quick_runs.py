"""The benchmarks still run: each one's `--quick` mode, as a script, prints one JSON object
with the figures it promises. No timing is asserted (the machines are shared): only that
the figures exist, are sane, and that the link lost nothing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from tests.support.mqtt_broker import require_mosquitto

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def quick(name: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), "--quick", *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # one JSON object on one line
    return json.loads(lines[0])


def test_protocol_codec_quick_reports_rates_sizes_and_goals():
    out = quick("protocol_codec.py")
    assert out["benchmark"] == "protocol_codec"
    cases = out["cases"]
    assert set(cases) == {"measurement_16", "measurement_16_mask", "measurement_416",
                          "measurement_416_mask", "status"}
    for case in cases.values():
        assert case["frame_bytes"] > case["payload_bytes"] > 0
        assert case["encode_fps"] > 0 and case["decode_fps"] > 0
        assert case["decode_fps_batched_64"] > 0
    for name in ("measurement_16", "measurement_416"):
        assert cases[name]["goal_decode_fps"] > 0
        assert isinstance(cases[name]["goal_met"], bool)
    # 4 bytes a cell and a sensor (one per 4 cells): the 416-cell frame is 26 x the cells.
    assert cases["measurement_416"]["payload_bytes"] - cases["measurement_16"]["payload_bytes"] \
        == (416 - 16) * 4 + (104 - 4) * 4
    assert cases["measurement_16_mask"]["payload_bytes"] \
        == cases["measurement_16"]["payload_bytes"] + 2
    assert "goal_met" not in cases["status"]
    assert isinstance(out["goal_met"], bool)
    comparison = out["construct_array_416"]
    assert comparison["n_cells"] == 416
    for key in ("parse_fps_frombuffer", "parse_fps_construct_array", "parse_ratio",
                "build_fps_frombuffer", "build_fps_construct_array", "build_ratio"):
        assert comparison[key] > 0


def test_pty_roundtrip_quick_answers_every_request():
    out = quick("pty_roundtrip.py")
    assert out["benchmark"] == "pty_roundtrip"
    assert out["baud"] == 921600
    assert "pace" in out["note"]
    assert set(out["packs"]) == {"16", "416"}
    for pack in out["packs"].values():
        for request, response in (("GetStatus", "Status"), ("GetCellVoltages", "CellVoltages")):
            figures = pack[request]
            assert figures["response"] == response
            assert figures["answered"] == figures["requests"] > 0
            assert figures["timeouts"] == 0
            assert 0 < figures["min_ms"] <= figures["median_ms"] <= figures["p99_ms"] \
                <= figures["max_ms"]
            assert figures["request_bytes"] > 0 and figures["response_bytes"] > 0
            assert figures["wire_ms"] > 0 and figures["median_over_wire"] > 0
        assert isinstance(pack["GetStatus"]["goal_met"], bool)
        assert pack["client_decode_errors"] == {}
    cells = {n: out["packs"][n]["GetCellVoltages"]["response_bytes"] for n in ("16", "416")}
    assert cells["416"] - cells["16"] >= (416 - 16) * 4  # COBS may add a byte in 254
    assert out["pack_size_effect"]["GetStatus_median_ms_ratio"] > 0


def test_hil_streaming_quick_loses_nothing():
    out = quick("hil_streaming.py")
    assert out["benchmark"] == "hil_streaming"
    assert set(out["packs"]) == {"16@100Hz", "416@10Hz"}
    for pack in out["packs"].values():
        assert pack["sent"] > 0
        assert pack["answered"] == pack["sent"]
        assert pack["lost"] == 0
        assert pack["nacks"] == {}
        assert pack["client_decode_errors"] == {}
        assert pack["unknown_rig_seq"] == 0 and pack["wrong_size_actuations"] == 0
        assert pack["achieved_hz"] > 0
        assert 0 < pack["latency_p50_ms"] <= pack["latency_p99_ms"] <= pack["latency_max_ms"]
        assert 0 < pack["line_share_to_emulator"] < 1
        assert 0 < pack["line_share_from_emulator"] < 1
        assert pack["goal_met"] is True
    assert out["goal_met"] is True


def test_soak_quick_loses_nothing_and_publishes():
    """6 s of `serve --hil` at a 10 ms tick (the hour is the benchmark itself), driven by
    `rig` over a pty pair, publishing to Mosquitto. Jitter, overruns and memory growth are
    printed, not asserted: on a shared machine they measure the neighbours as much as the
    emulator."""
    require_mosquitto()
    out = quick("soak.py")
    print(json.dumps(out))
    assert out["benchmark"] == "soak"
    assert (out["seconds"], out["warmup_s"], out["tick_s"]) == (6, 2, 0.01)
    assert out["emulator_exit"] == 0 and out["rig_exit"] == 0
    frames = out["frames"]
    assert frames["sent"] > 0 and frames["answered"] > 0
    assert frames["lost"] == 0 and frames["not_sent"] == 0 and frames["decode_errors"] == 0
    assert frames["nacks"] == {}
    assert sum(out["relay_bytes"][k] for k in ("dropped_first_to_second",
                                                "dropped_second_to_first")) == 0
    mqtt = out["mqtt"]
    for topic in ("state", "cells", "temperatures", "balancing"):
        assert mqtt["by_topic"].get(topic, 0) > 0, mqtt
    assert mqtt["published"] > 0  # as the emulator counts them
    jitter = out["jitter_ms"]
    assert all(math.isfinite(jitter[k]) and jitter[k] >= 0 for k in jitter)
    assert jitter["p50_ms"] <= jitter["p99_ms"] <= jitter["max_ms"]
    assert isinstance(out["overruns"], int) and out["overruns"] >= 0
    assert out["emulator"]["tick"]["ticks"] > 0 and out["reference"]["ticks"] > 0
    for figure in ("send_lateness", "answer_latency"):
        assert out["rig"][figure]["count"] > 0 and math.isfinite(out["rig"][figure]["p99_ms"])
    rss = out["rss_kib"]
    assert rss["start_kib"] > 0 and rss["end_kib"] > 0 and math.isfinite(rss["growth_pct"])
    assert set(out["goals"]) == {"jitter_p99_ms", "overruns", "frames_lost", "rss_growth_pct"}
    assert all(isinstance(goal["met"], bool) for goal in out["goals"].values())
    assert out["goals"]["frames_lost"]["met"] is True


def test_mqtt_flood_quick_refuses_the_flood_unread_and_reports_both_emulators():
    """A flood at one of two emulators on one broker (the benchmark's figures are its
    lateness beside the other's, printed, not asserted: a shared machine's neighbours
    move them as much as the flood does)."""
    require_mosquitto()
    out = quick("mqtt_flood.py")
    print(json.dumps(out))
    assert out["benchmark"] == "mqtt_flood" and (out["seconds"], out["tick_s"]) == (4, 0.01)
    assert out["flood"] == {"big_mb": 4.0, "big_proto_mb": 0.5, "small": 10_000}
    calm, flooded = out["calm"], out["flooded"]
    assert calm["flood_sent"] == 0 and flooded["flood_sent"] == 10_002
    for run in (calm, flooded):
        for pack in ("target", "reference"):
            figures = run[pack]
            assert figures["exit"] == 0 and "error" not in figures, figures
            assert figures["ticks"] > 0 and figures["published"] > 0
            assert 0 <= figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
            assert figures["tick_errors"] == 0
            assert figures["telemetry_received"] > 0
    for run in (calm, flooded):  # nothing reached the reference, nor the calm target
        assert run["reference"]["refused_messages"] == {}
        assert run["reference"]["dropped_by_broker"] == 0
    assert calm["target"]["refused_messages"] == {}
    target = flooded["target"]
    # the big ones: kept off the wire by the broker (the session's Maximum Packet Size)
    assert target["dropped_by_broker"] == 2
    refused = target["refused_messages"]
    assert set(refused) == {"bench/target/cmd/+", "bench/target/proto/in"}, refused
    for reasons in refused.values():
        assert reasons["over_rate"] > 0 and "too_large" not in reasons, refused
    assert set(target["refused_commands"]) <= {"NOT_ENABLED"}
    assert target["not_enabled"] == {}  # GetStatus floods are reads
    assert out["p99_ratio_calm"] > 0 and out["p99_ratio_flood"] > 0
    assert set(out["goals"]) == {"p99_ratio_within_noise", "extra_overruns",
                                 "telemetry_lost", "big_messages_kept_out"}
    assert out["goals"]["big_messages_kept_out"]["met"] is True
    assert all(isinstance(goal["met"], bool) for goal in out["goals"].values())


def test_fuzz_protocol_quick_never_crashes_and_loses_nothing():
    out = quick("fuzz_protocol.py")
    assert out["benchmark"] == "fuzz_protocol"
    assert out["frames_fed"] >= 20_000 and out["bytes_fed"] > out["frames_fed"]
    assert out["crashes"] == 0 and out["crash_reproducers_hex"] == []
    assert out["frames_not_sent"] == 0 and out["decoded_not_reencodable"] == 0
    assert out["valid_lost_after_garbage"] == 0
    assert out["resync_distance_bytes"]["n"] > 0 and out["resync_distance_bytes"]["max"] == 0
    errors = out["errors_by_kind"]
    assert sum(1 for n in errors.values() if n > 0) >= 6, errors  # several kinds met
    assert errors["OVERSIZE"] > 0 and errors["BAD_CRC"] > 0 and errors["BAD_PAYLOAD"] > 0
    assert out["frames_decoded"] > out["fed_by_kind"]["valid"]
    assert 0 < out["max_buffered_bytes"] <= out["buffer_bound_bytes"]
    assert out["goal_met"] is True


def test_duty_cycles_quick_passes_every_run_and_names_its_command():
    """Also the only run of the 2C na-nfm cycle and the UPS outage on na-nvpf 16S in the
    suite (tests/hil/test_duty_cycles.py leaves them to this test)."""
    out = quick("duty_cycles.py", "--jobs", "2")
    assert out["benchmark"] == "duty_cycles"
    names = [r["name"] for r in out["runs"]]
    assert names == ["full cycle 2C na-nfm 16S", "rest 1 h na-nvpf 16S", "UPS outage na-nvpf 16S"]
    for run in out["runs"]:
        assert run["passed"] and run["problems"] == [] and run["events"] == [], run
        assert run["command"].startswith("bms-emu ") and run["sim_s"] > 0
    cycle = out["runs"][0]
    assert cycle["soc_true_min_pct"] < 10 and cycle["soc_true_max_pct"] > 95
    assert (out["passed"], out["failed"], out["goal_met"]) == (3, 0, True)


def test_csv_readers_quick_are_linear_in_rows_and_columns():
    """Four times the columns or rows costs about four times the CPU, not sixteen (the
    replay reader was quadratic in its columns: 20k took 7 s, 80k 128 s). A ratio of CPU
    times in one run, not a time."""
    out = quick("csv_readers.py")
    assert out["benchmark"] == "csv_readers"
    assert set(out["cases"]) == {"replay_columns", "replay_rows", "profile_rows"}
    assert out["cases"]["replay_columns"]["sizes"] == [20_000, 40_000, 80_000]
    for name, case in out["cases"].items():
        assert all(t > 0 for t in case["seconds"]), name
        assert case["ratio_4x"] < out["linear_ratio_4x"] == 8.0, (name, case)
    assert out["linear"] is True


def test_pack_v_drift_quick_stays_under_its_threshold_on_a_healthy_pack():
    out = quick("pack_v_drift.py")
    assert out["benchmark"] == "pack_v_drift"
    (case,) = out["cases"].values()
    assert 0 < case["rms_v"] < case["max_v"] < case["threshold_v"]
    assert case["margin"] > 1 and case["events"] == []
    assert case["bleeding_share"] > 0  # the balancer's sense-wire drop was in the readings


def test_can_link_quick_reports_periods_answers_and_cpu(multicast_alone):
    from tests.bms.links.can.test_udp_multicast import group, multicast_or_skip

    multicast_or_skip(group())
    out = quick("can_link.py")
    assert out["benchmark"] == "can_link"
    frames = out["pylon_lv"]["frames"]
    assert {"0x351", "0x355", "0x356", "0x359", "0x35C", "0x35E"} <= set(frames)
    assert all(frames[i]["frames"] >= 3 for i in ("0x351", "0x355", "0x356", "0x359", "0x35C"))
    assert isinstance(out["pylon_lv"]["goal_met"], bool)
    assert out["pylon_hv"]["answers"] >= 3 and out["pylon_hv"]["answer_ms_max"] > 0
    for key in ("cpu_pct_without_can", "cpu_pct_pylon_lv", "cpu_pct_pylon_hv"):
        assert out[key] > 0


def test_can_rates_quick_reports_each_identifiers_rate_and_the_bms_sides_cpu(multicast_alone):
    out = quick("can_rates.py")
    assert out["benchmark"] == "can_rates" and isinstance(out["goal_met"], bool)
    rt = out["real_time"]
    assert {f["name"] for f in rt["frames"].values()} >= {"bms_limits", "inverter_keepalive",
                                                          "dc_setpoint"}
    limits = rt["frames"]["0x351"]
    assert limits["frames"] >= 3 and limits["goal_fps"] == 1.0 and limits["fps"] > 0
    assert rt["inverter_outage"]["served_s"] > 0  # the loop was closed: the battery carried it
    assert rt["serve_cpu_s_per_hour_steady"] > 0
    sim = out["simulated"]
    assert sim["bms_cpu_s_per_sim_hour"] >= sim["can_link_cpu_s_per_sim_hour"] > 0
    assert sim["frames_per_sim_s"]["0x351"]["fps"] == 1.0 and sim["events"] == []


def test_scenario_sweep_quick_reports_both_times_and_that_the_outcomes_agree():
    out = quick("scenario_sweep.py")
    assert out["benchmark"] == "scenario_sweep" and out["scenarios"] == 5
    assert out["serial_s"] > 0 and out["parallel_s"] > 0 and out["ratio"] > 0
    assert out["identical"] is True and out["passed"] == 5
    assert isinstance(out["goal_met"], bool)


def test_fit_accuracy_quick_reports_the_fit_against_the_truth():
    case = quick("fit_accuracy.py")["cases"]["na-nfm"]
    assert abs(case["capacity_error_pct"]) < 1.0
    assert abs(case["coulombic_efficiency"] - case["coulombic_efficiency_true"]) < 0.003
    assert all(b["rms_mv"] < 10.0 for b in case["ocv_10_90_pct"].values())
    assert abs(case["r0_50pct_error_pct"]) < 8.0
    assert {r["part"] for r in case["residuals"]} == {"fitted", "held-out"}


def test_coulombic_efficiency_quick_learns_on_the_second_cycle():
    out = quick("coulombic_efficiency.py", "--offset-sigma-c", "0.002")
    assert out["benchmark"] == "coulombic_efficiency"
    learning, fixed = out["learning"], out["fixed"]
    assert learning["state"] == fixed["state"] == "RUN"
    # No earlier anchor of a kind in the first cycle; the second's samples move it down.
    assert learning["efficiency_by_cycle"][0] == 1.0 == fixed["efficiency_by_cycle"][-1]
    assert 0.95 <= learning["efficiency_by_cycle"][-1] < 0.98
    assert 0.0 < learning["rmse_pct"] < 2.0 and 0.0 < fixed["rmse_pct"] < 2.0


def test_headless_rtf_steps_a_batch_and_reports_it_per_pack():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "headless_rtf.py"), "--packs", "3",
                           "--series", "4", "--duration-s", "5", "--repeat", "1"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert (out["packs"], out["series"], out["sim_s"]) == (3, 4, 5.0)
    assert out["goal_rtf"] == 100  # a batch's goal, not one pack's
    assert math.isclose(out["cell_s_per_s"], out["rtf"] * 4 * 3, rel_tol=0.01)
    assert math.isclose(out["us_per_pack_tick"] * 3, out["us_per_tick"], rel_tol=0.01)
