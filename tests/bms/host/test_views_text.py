"""Arrays written as JSON text for MQTT payloads (`views.floats_text`, `views.dumps`) give the
bytes json.dumps gives for the same view as lists: the payloads users parse do not change."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bms.host import views
from protocol import messages as pm

EDGES = [0.0, -0.0, 3.3, 3.2999999523, -12.5, 1e-05, 1.234e-07, 12345678.9, 1e16, 2.5e-300,
         math.nan, math.inf, -math.inf, 4.1999998, 25.200000000000003]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_array_as_text_is_the_json_of_the_same_array_as_a_list(dtype):
    rng = np.random.default_rng(7)
    a = np.concatenate([np.asarray(EDGES), rng.uniform(-40.0, 4.5, 400)]).astype(dtype)
    for _ in range(2):  # the second time from the remembered texts
        assert json.loads(views.floats_text(a)) == views._floats(a)
        assert (views.dumps({"cell_voltage_v": views.floats_text(a), "seq": 7})
                == json.dumps({"cell_voltage_v": views._floats(a), "seq": 7}, allow_nan=False))


def test_zero_keeps_its_sign_whichever_zero_came_first():
    assert views.floats_text(np.array([0.0, -0.0, 0.0])) == "[0.0, -0.0, 0.0]"
    assert views.floats_text(np.array([-0.0, 0.0])) == "[-0.0, 0.0]"
    assert views.floats_text(np.zeros(0)) == "[]"


def test_a_body_with_text_is_written_as_json_dumps_writes_it():
    cells = views.cells_dict(pm.CellVoltages(np.array([3.3, np.nan], np.float32)),
                             views.floats_text)
    body = {**cells, "seq": 3, "pack_id": "p-\u00e9", "unix_time_s": 1.5, "nested": {"a": [1]}}
    plain = {**views.cells_dict(pm.CellVoltages(np.array([3.3, np.nan], np.float32))),
             **{k: v for k, v in body.items() if k != "cell_voltage_v"}}
    assert views.dumps(body) == json.dumps(plain, allow_nan=False)
    assert json.loads(views.dumps(body))["cell_voltage_v"] == [3.3, None]


def test_a_body_without_text_is_refused_a_nan_as_json_dumps_refuses_it():
    with pytest.raises(ValueError):
        views.dumps({"x": math.nan})
    with pytest.raises(ValueError):
        views.dumps({"a": views.JsonText("[]"), "x": math.nan})


@pytest.mark.parametrize("mask", [[False, True, False, True], np.array([1, 0, 0, 1, 1], bool)])
def test_balancing_lists_the_mask_and_the_bleeding_cells_from_1(mask):
    d = views.balancing_dict(pm.BalancingState(mode=1, mask=mask))
    flags = [bool(x) for x in mask]
    assert d["mask"] == flags and all(type(x) is bool for x in d["mask"])
    assert d["bleeding_cells"] == [i + 1 for i, on in enumerate(flags) if on]
    assert all(type(x) is int for x in d["bleeding_cells"])


def test_the_remembered_texts_stay_bounded_and_right_after_the_memory_fills():
    many = np.arange(1, views.TEXTS_KEPT + 1000, dtype=np.float64) * 1e-3
    text = views.floats_text(many)
    assert len(views._TEXTS) <= views.TEXTS_KEPT
    assert json.loads(text) == views._floats(many)
    assert views.floats_text(many[-3:]) == json.dumps(views._floats(many[-3:]))
