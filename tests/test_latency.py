"""`evaluate.median_latencies_ms`, the timing behind tools/bench.py's table: functions measured
in turns, so that a slow spell of the machine falls on all of them."""
from __future__ import annotations

import time

from qcompiler.evaluate import median_latencies_ms, median_latency_ms


def test_latencies_are_taken_in_rounds_through_every_function():
    calls: list[str] = []
    fns = [lambda: calls.append("a"), None, lambda: calls.append("b")]
    out = median_latencies_ms(fns, runs=7, warmup=1, rounds=3)
    assert out[1] is None and out[0] >= 0 and out[2] >= 0
    # warm-up, then 3 rounds of 3, 2 and 2 calls each (7 runs)
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + (["a"] * 2 + ["b"] * 2) * 2


def test_latencies_are_medians_in_milliseconds():
    slow, fast = median_latencies_ms([lambda: time.sleep(0.004), lambda: None], runs=6,
                                     warmup=0, rounds=2)
    assert 4.0 <= slow < 100 and fast < 1.0
    assert 4.0 <= median_latency_ms(lambda: time.sleep(0.004), runs=3, warmup=0) < 100
