"""The run's metrics as the ``--metrics`` file holds them and as the command prints them."""

from __future__ import annotations

from types import SimpleNamespace

from distilbeam.pipeline import metrics


def entry(namespace, name, value):
    return SimpleNamespace(
        key=SimpleNamespace(metric=SimpleNamespace(namespace=namespace, name=name)),
        committed=value,
        attempted=value,
    )


def distribution(total, count, low, high):
    return SimpleNamespace(sum=total, count=count, min=low, max=high)


class Result:
    def __init__(self, counters, distributions):
        self._query = {"counters": counters, "distributions": distributions}

    def metrics(self):
        return SimpleNamespace(query=lambda: self._query)


def test_counters_add_up_over_steps_and_other_namespaces_are_left_out():
    result = Result(
        [
            entry("distilbeam.sentiment", "real_tokens", 900),
            entry("distilbeam.sentiment", "real_tokens", 100),
            entry("distilbeam.sentiment", "computed_tokens", 1100),
            entry("distilbeam.sentiment", "forward_ms", 500),
            entry("beam", "elements", 7),
        ],
        [
            entry("distilbeam.sentiment", "startup_ms", distribution(3000, 2, 1000, 2000)),
            entry("distilbeam.sentiment", "startup_ms", distribution(4000, 1, 4000, 4000)),
        ],
    )
    values = metrics.collect(result)
    assert values == {
        "distilbeam.sentiment": {
            "real_tokens": 1000,
            "computed_tokens": 1100,
            "forward_ms": 500,
            "startup_ms": {"sum": 7000, "count": 3, "min": 1000, "max": 4000},
        }
    }
    (line,) = metrics.describe(values)
    assert line == (
        "task sentiment: 1000 tokens through the model, 9.1% padding, 2,000 tokens/s in the model, "
        "4.0s from model load to first batch"
    )


def test_a_runner_without_metrics_does_not_fail_the_run(tmp_path, caplog):
    class Broken:
        def metrics(self):
            raise NotImplementedError("no metrics here")

    path = tmp_path / "m.json"
    metrics.report(Broken(), str(path))
    assert not path.exists()
    assert "cannot read the run's metrics" in caplog.text
