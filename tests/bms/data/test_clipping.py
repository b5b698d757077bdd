"""The estimator's clip (`bms.data.clipping.clip`) gives np.clip's bits, NaN and infinities
included, on floats and integers; the one case it does not (a float bound of zero) is why the
estimator keeps np.clip where a bound is zero."""

from __future__ import annotations

import numpy as np
import pytest

from bms.data.clipping import clip

SPECIAL = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, -1.0, 1.0, -0.03, 1.05])


@pytest.mark.parametrize("n", [1, 4, 17, 416])
@pytest.mark.parametrize(("low", "high"), [(-0.03, 1.05), (-1.0, 1.0), (0.02, 0.3)])
def test_floats_clip_to_the_bits_np_clip_gives(n, low, high):
    rng = np.random.default_rng(n)
    x = np.concatenate((SPECIAL, rng.uniform(-2.0, 2.0, n), np.nextafter([low, high], 0.0)))
    expected = np.clip(x, low, high)
    assert clip(x, low, high).tobytes() == expected.tobytes()
    out = x.copy()
    assert clip(out, low, high, out=out) is out
    assert out.tobytes() == expected.tobytes()


def test_integers_clip_as_np_clip_does_a_zero_bound_included():
    k = np.arange(-3, 20)
    got = clip(k, 0, 12)
    assert got.dtype == np.clip(k, 0, 12).dtype
    assert np.array_equal(got, np.clip(k, 0, 12))


def test_a_float_bound_of_zero_differs_in_the_sign_of_a_zero():
    """np.clip keeps a -0.0 at a lower bound of 0.0, clip gives +0.0: where a bound is zero
    (the published SoC's 0..1) the estimator keeps np.clip."""
    x = np.array([-0.0])
    assert np.signbit(np.clip(x, 0.0, 1.0))[0]
    assert not np.signbit(clip(x, 0.0, 1.0))[0]
