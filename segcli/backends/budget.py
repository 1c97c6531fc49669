"""Whether `auto`'s measurement pays off for the run it serves: its cost at most `SHARE` of the run's.

The run's cost is estimated from one timed torch forward at the measured view (`t_view`) times the views
the run plans (at least one per image: scales × flips × windows); the measurement's from what it does: an
ONNX export (`export.estimate_seconds`, measured by benchmarks/export_time.py), a torch.compile (`COMPILE_*`:
a rough guess, not measured per model — a cold compile of the tiny test model took 35–64 s in the tests, so
it errs towards measuring), then one warm-up and `ROUNDS` timed calls per candidate at about `t_view` each.
A 40-image run of a real model on 2 cores does not pay for a minute of measuring; 2000 images do.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .calibrate import ROUNDS

SHARE = 0.10  # the measurement may cost at most this share of the run
COMPILE_FIXED, COMPILE_PER_MODULE = 15.0, 0.05  # seconds: torch.compile (inductor, cold cache), a guess


@dataclass(frozen=True)
class Budget:
    measure_s: float  # what measuring would cost (estimated)
    run_s: float  # what the run costs on torch (estimated)

    @property
    def pays(self) -> bool:
        return self.measure_s <= SHARE * self.run_s

    def say(self) -> str:
        share = 100 * self.measure_s / self.run_s if self.run_s > 0 else float("inf")
        return f"measuring ~{self.measure_s:.0f} s = {share:.0f} % of this run's ~{self.run_s:.0f} s on torch"


def estimate(net: nn.Module, candidates: list[str], t_view: float, views: int, dynamic: bool) -> Budget:
    """The budget of measuring `candidates` ("compile", "onnxruntime", "openvino") besides torch for a run of `views`
    forward passes of about `t_view` seconds each (`dynamic`: the ONNX export is a dynamic one)."""
    from .export import estimate_seconds
    from .openvino import COMPILE_S

    prepare = 0.0
    if "onnxruntime" in candidates or "openvino" in candidates:  # one export for both
        prepare += estimate_seconds(net, "onnx", dynamic)
    if "openvino" in candidates:
        prepare += COMPILE_S
    if "compile" in candidates:
        prepare += COMPILE_FIXED + COMPILE_PER_MODULE * sum(1 for _ in net.modules())
    timing = (1 + ROUNDS) * (1 + len(candidates)) * t_view
    return Budget(prepare + timing, views * t_view)
