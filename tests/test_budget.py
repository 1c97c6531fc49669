"""`auto`'s measurement pays off for the run it serves, and a busy machine's noisy timing is taken again."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segcli import Segmenter
from segcli.backends import budget, calibrate


class FakeClock:
    """`time.perf_counter` that advances by the scripted duration of each timed call."""

    def __init__(self, durations: list[float]) -> None:
        self.durations, self.now, self.started = list(durations), 0.0, False

    def __call__(self) -> float:
        if self.started:  # the end of a timed call
            self.now += self.durations.pop(0)
        self.started = not self.started
        return self.now


def _models(n: int = 2) -> dict[str, object]:
    return {name: (lambda x, upsample: x) for name in ("torch", "other")[:n]}


def test_a_noisy_measurement_is_timed_again_and_medians_cover_both(monkeypatch):
    # rounds interleave the models: torch, other, torch, other, ...
    first = [1.0, 2.0, 1.0, 2.0, 3.5, 2.0]  # torch's third call: another process took the CPU (×3.5)
    second = [1.0, 2.0, 1.1, 2.1, 1.0, 2.0]
    clock = FakeClock(first + second)
    monkeypatch.setattr(calibrate.time, "perf_counter", clock)
    said: list[str] = []
    seconds = calibrate.measure(_models(), torch.zeros(1), rounds=3, log=said.append)
    assert clock.durations == []  # both attempts were timed
    assert seconds == pytest.approx(
        {"torch": 1.0, "other": 2.0}
    )  # medians of [1, 1, 3.5, 1, 1.1, 1] and of the other six
    assert len(said) == 1 and "spread ×3.50" in said[0]


def test_a_quiet_measurement_is_timed_once(monkeypatch):
    clock = FakeClock([1.0, 2.0, 1.1, 2.2, 1.2, 2.1] + [9.0] * 6)
    monkeypatch.setattr(calibrate.time, "perf_counter", clock)
    said: list[str] = []
    seconds = calibrate.measure(_models(), torch.zeros(1), rounds=3, log=said.append)
    assert seconds == pytest.approx({"torch": 1.1, "other": 2.1})
    assert len(clock.durations) == 6 and said == []  # the spare durations untouched


def test_the_measurement_pays_off_only_for_runs_ten_times_its_cost():
    net = nn.Sequential(*[nn.Identity() for _ in range(99)])  # 100 modules with the Sequential
    t = 0.5  # seconds per forward call
    # compile: 15 s + 0.05 s per module; timing: one warm-up and 3 rounds for torch and compile
    cost = 15.0 + 0.05 * 100 + (1 + 3) * 2 * t
    smallest = int(10 * cost / t)  # calls for which the measurement is a tenth of the run
    assert budget.estimate(net, ["compile"], t, smallest, dynamic=False).pays
    b = budget.estimate(net, ["compile"], t, smallest - 1, dynamic=False)
    assert not b.pays and b.measure_s == pytest.approx(cost)
    assert (
        b.say()
        == f"measuring ~{cost:.0f} s = {100 * cost / ((smallest - 1) * t):.0f} % of this run's ~{(smallest - 1) * t:.0f} s on torch"
    )
    with_export = budget.estimate(net, ["compile", "onnxruntime"], t, smallest, dynamic=False)
    assert with_export.measure_s > b.measure_s + (1 + 3) * t  # the export and a third candidate's calls


def test_a_small_run_is_not_measured_and_says_what_it_would_cost(tiny_convnext_dir):
    seg = Segmenter.from_pretrained(tiny_convnext_dir)
    said: list[str] = []
    choice = seg.use_backend("auto", seg.params("hf"), log=said.append, run_images=3)
    assert choice.backend == "torch" and choice.seconds is None
    assert "not measured: measuring ~" in choice.reason and "% of this run's" in choice.reason
    assert not calibrate.cache_file().exists() and not any("preparing" in s for s in said)
