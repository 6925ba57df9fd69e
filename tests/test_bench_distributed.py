"""experiments/bench_distributed.py: the schedule, the statistics and the table; a tiny real run (slow)."""

import importlib.util
import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent


def _mod():
    spec = importlib.util.spec_from_file_location("bench_distributed",
                                                  HERE.parent / "experiments" / "bench_distributed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_schedule_is_round_robin():
    assert _mod().interleaved(("a", "b"), 2) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]


def test_summary_medians_and_table():
    m = _mod()
    rows = [{"config": "1 device", "samples_per_s": v, "load": 1.0} for v in (100, 300, 200)] + \
           [{"config": "2 processes", "samples_per_s": v, "load": 3.0} for v in (50, 150)]
    s = m.summarise(rows)
    assert s["1 device"] == {"median": 200, "min": 100, "max": 300, "runs": 3, "load": 1.0}
    assert s["2 processes"]["median"] == 100 and s["2 processes"]["runs"] == 2
    t = m.table(s).splitlines()
    assert t[2] == "| 1 device | 200 | 100-300 | 1.00x | 1.0 |"
    assert t[3] == "| 2 processes | 100 | 50-150 | 0.50x | 3.0 |"


@pytest.mark.slow
def test_bench_runs_every_configuration():
    r = _mod().bench(batch=16, steps=2, warmup=1, repeats=1, log=lambda *a: None)
    assert list(r["summary"]) == ["1 device", "2 simulated devices", "2 processes"]
    by = {row["config"]: row for row in r["rows"]}
    assert by["2 simulated devices"]["devices"] == 2 and by["2 processes"]["processes"] == 2
    assert all(row["samples_per_s"] > 0 for row in r["rows"])
