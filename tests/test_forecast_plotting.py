"""The fan-chart helper writes a PNG."""

from __future__ import annotations

import numpy as np
import pytest

from dforce.errors import DataError
from dforce.recipes.forecast.plots import plot_forecast_fan


def test_fan_chart_png(tmp_path):
    rng = np.random.default_rng(0)
    hist = rng.normal(size=(50, 3)).cumsum(0)
    samples = hist[-1] + rng.normal(size=(20, 6, 3)).cumsum(1)
    out = plot_forecast_fan(tmp_path / "sub" / "fan.png", hist, samples, actual=samples[0], names=["a", "b", "c"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(DataError, match="history must be"):
        plot_forecast_fan(tmp_path / "x.png", hist[:, :2], samples)
