"""Counters, gauges and histograms rendered in the Prometheus text format (version 0.0.4).

A small registry of our own: the service exports a dozen series, and a dependency on a
metrics client would be larger than this module. Thread-safe: worker threads and the
event loop update it concurrently.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["Counter", "Gauge", "Histogram", "Registry"]

Labels = tuple[tuple[str, str], ...]

_M = TypeVar("_M", bound="_Metric")

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(labels: dict[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(labels: Labels, extra: Labels = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._lock = threading.Lock()

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}", *self._samples()]

    def _samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, labels: dict[str, str] | None = None) -> None:
        key = _labels(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, labels: dict[str, str] | None = None) -> float:
        with self._lock:
            return self._values.get(_labels(labels), 0.0)

    def _samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_format_labels(k)} {_number(v)}" for k, v in items]


class Gauge(_Metric):
    """A value set by the code, or read from ``source`` when rendered."""

    kind = "gauge"

    def __init__(
        self, name: str, help_text: str, source: Callable[[], dict[Labels, float] | float] | None = None
    ) -> None:
        super().__init__(name, help_text)
        self._values: dict[Labels, float] = {}
        self._source = source

    def set(self, value: float, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            self._values[_labels(labels)] = value

    def _samples(self) -> list[str]:
        if self._source is not None:
            got = self._source()
            items = sorted(got.items()) if isinstance(got, dict) else [((), float(got))]
        else:
            with self._lock:
                items = sorted(self._values.items())
        return [f"{self.name}{_format_labels(k)} {_number(v)}" for k, v in items]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[Labels, list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, value: float, labels: dict[str, str] | None = None) -> None:
        key = _labels(labels)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += 1
            series[-1] += value

    def count(self, labels: dict[str, str] | None = None) -> int:
        with self._lock:
            series = self._series.get(_labels(labels))
            return 0 if series is None else int(series[-2])

    def _samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        out: list[str] = []
        for key, series in items:
            for bound, n in zip(self.buckets, series[: len(self.buckets)], strict=True):
                out.append(f"{self.name}_bucket{_format_labels(key, (('le', _number(bound)),))} {_number(n)}")
            out.append(f"{self.name}_bucket{_format_labels(key, (('le', '+Inf'),))} {_number(series[-2])}")
            out.append(f"{self.name}_sum{_format_labels(key)} {_number(series[-1])}")
            out.append(f"{self.name}_count{_format_labels(key)} {_number(series[-2])}")
        return out


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def counter(self, name: str, help_text: str) -> Counter:
        return self._add(Counter(name, help_text))

    def gauge(
        self, name: str, help_text: str, source: Callable[[], dict[Labels, float] | float] | None = None
    ) -> Gauge:
        return self._add(Gauge(name, help_text, source))

    def histogram(self, name: str, help_text: str, buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help_text, buckets))

    def _add(self, metric: _M) -> _M:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
