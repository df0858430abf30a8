"""GET /metrics: the Prometheus text format (version 0.0.4), kept by hand: a few counters and histograms updated on
the event loop's thread only, so no lock is needed."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """Cumulative buckets, a sum and a count, as Prometheus histograms are exposed."""

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, running = [], 0
        sep = "," if labels else ""
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        tail = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{tail} {self.sum:.6f}", f"{name}_count{tail} {running}"]
        return out


class Metrics:
    """Requests by route and status code, request latency, batch sizes and forward time, and the queue depth."""

    def __init__(self, queue_depth: Callable[[], int]):
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.forward_seconds = Histogram(LATENCY_BUCKETS)
        self.queue_depth = queue_depth
        self.in_flight = 0

    def request(self, route: str, code: int, seconds: float) -> None:
        key = (route, code)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(route)
        if hist is None:  # not setdefault: that built a histogram on every request
            hist = self.latency[route] = Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.forward_seconds.observe(seconds)

    def render(self) -> str:
        lines = ["# HELP lstmcast_requests_total HTTP requests answered, by route and status code.",
                 "# TYPE lstmcast_requests_total counter"]
        lines += [f'lstmcast_requests_total{{route="{r}",code="{c}"}} {n}'
                  for (r, c), n in sorted(self.requests.items())]
        lines += ["# HELP lstmcast_request_errors_total Requests answered with a 4xx or 5xx code, by code.",
                  "# TYPE lstmcast_request_errors_total counter"]
        errors: dict[int, int] = {}
        for (_, c), n in self.requests.items():
            if c >= 400:
                errors[c] = errors.get(c, 0) + n
        lines += [f'lstmcast_request_errors_total{{code="{c}"}} {n}' for c, n in sorted(errors.items())]
        lines += ["# HELP lstmcast_request_seconds Time from the request's arrival to its answer.",
                  "# TYPE lstmcast_request_seconds histogram"]
        for route, h in sorted(self.latency.items()):
            lines += h.lines("lstmcast_request_seconds", f'route="{route}"')
        lines += ["# HELP lstmcast_batch_size Requests merged into one forward.",
                  "# TYPE lstmcast_batch_size histogram"]
        lines += self.batch_size.lines("lstmcast_batch_size")
        lines += ["# HELP lstmcast_forward_seconds Time of one batched forward on the model thread.",
                  "# TYPE lstmcast_forward_seconds histogram"]
        lines += self.forward_seconds.lines("lstmcast_forward_seconds")
        lines += ["# HELP lstmcast_queue_depth Requests waiting for a forward.", "# TYPE lstmcast_queue_depth gauge",
                  f"lstmcast_queue_depth {self.queue_depth()}",
                  "# HELP lstmcast_requests_in_flight Requests being handled now.",
                  "# TYPE lstmcast_requests_in_flight gauge", f"lstmcast_requests_in_flight {self.in_flight}"]
        return "\n".join(lines) + "\n"
