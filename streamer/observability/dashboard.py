"""``streamer dashboard``: a live page of the cascade, from the workers' Prometheus metrics.

The server scrapes every worker's ``/metrics`` once a second, turns consecutive scrapes
into rates and windowed latency quantiles (:func:`derive`), keeps the last ten minutes,
and serves them as JSON to a self-contained page (no external scripts: it draws its own
charts on canvas). A worker that cannot be scraped is shown as unreachable, with the error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

HISTORY = 600  # points, one per scrape
SCRAPER: web.AppKey[asyncio.Task[None]] = web.AppKey("scraper", asyncio.Task)


class DashboardError(RuntimeError):
    """The dashboard cannot serve (for example its port is taken)."""


@dataclass
class Snapshot:
    """One scrape of every worker: samples summed over workers, keyed by (name, sorted labels)."""

    time: float
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def total(self, name: str, **labels: str) -> float:
        """Sum of ``name`` over every sample whose labels include ``labels``."""
        out = 0.0
        for (n, lbls), value in self.samples.items():
            if n == name and all(dict(lbls).get(k) == v for k, v in labels.items()) and not math.isnan(value):
                out += value
        return out

    def first(self, name: str) -> float | None:
        for (n, _), value in self.samples.items():
            if n == name and not math.isnan(value):
                return value
        return None

    def buckets(self, name: str) -> dict[float, float]:
        """Cumulative histogram buckets of ``name`` (``..._bucket``), merged over labels and workers."""
        out: dict[float, float] = {}
        for (n, lbls), value in self.samples.items():
            if n == name + "_bucket":
                le = float(dict(lbls)["le"])
                out[le] = out.get(le, 0.0) + value
        return out


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text format -> {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile from cumulative buckets (upper bound of the bucket that reaches it)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    for le in bounds:
        if buckets[le] >= q * total:
            return le if math.isfinite(le) else bounds[-2] if len(bounds) > 1 else None
    return None


def derive(prev: Snapshot, cur: Snapshot) -> dict[str, Any]:
    """One chart point from two consecutive scrapes.

    >>> a = Snapshot(0.0, {("streamer_events_total", ()): 10.0})
    >>> b = Snapshot(2.0, {("streamer_events_total", ()): 30.0})
    >>> derive(a, b)["events_per_s"]
    10.0
    """
    dt = max(cur.time - prev.time, 1e-6)

    def rate(name: str, **labels: str) -> float:
        return max(cur.total(name, **labels) - prev.total(name, **labels), 0.0) / dt

    student = rate("streamer_predictions_total", source="student")
    teacher = rate("streamer_predictions_total", source="teacher")
    answered = student + teacher
    before = prev.buckets("streamer_decision_latency_seconds")
    window = {le: max(v - before.get(le, 0.0), 0.0)
              for le, v in cur.buckets("streamer_decision_latency_seconds").items()}
    return {
        "t": cur.time,
        "events_per_s": round(rate("streamer_events_total"), 2),
        "predictions_per_s": round(answered, 2),
        "student_share": round(student / answered, 4) if answered else None,
        "teacher_share": round(teacher / answered, 4) if answered else None,
        "escalations_per_s": round(rate("streamer_escalations_total"), 2),
        "agreement": cur.first("streamer_agreement_estimated"),
        "target": cur.first("streamer_agreement_target"),
        "threshold": cur.first("streamer_threshold"),
        "latency_p50": quantile(window, 0.5),
        "latency_p99": quantile(window, 0.99),
        "lag": cur.total("streamer_consumer_lag"),
        "events_total": cur.total("streamer_events_total"),
        "predictions_total": cur.total("streamer_predictions_total"),
        "dead_letters_total": cur.total("streamer_dead_letters_total"),
    }


def content_security_policy(page: str) -> str:
    """The page's policy: only its own inline script runs (by hash), so markup that ever reached the DOM could
    run no handler; it talks to its own server only.

    >>> content_security_policy("<script>x()</script>").split("; ")[1]
    "script-src 'sha256-D6IGS8VMvCoyaR/l0h9tERrBTATY01CoPS7l6xDv0kI='"
    """
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                      for s in scripts) or "'none'"
    return (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Dashboard:
    """Scrapes ``workers`` ({name: metrics URL}) every ``interval`` seconds and serves the page (headed with the
    cascade's ``namespace`` when it has one)."""

    def __init__(self, workers: dict[str, str], interval: float = 1.0, namespace: str | None = None) -> None:
        self.workers = workers
        self.namespace = namespace
        self.interval = interval
        self.points: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.status: dict[str, dict[str, Any]] = {name: {"url": url, "up": False, "error": "not scraped yet"}
                                                  for name, url in workers.items()}
        self._last: Snapshot | None = None

    async def scrape(self, session: ClientSession) -> Snapshot:
        snap = Snapshot(time.time())
        for name, url in self.workers.items():
            try:
                async with session.get(url) as resp:
                    resp.raise_for_status()
                    samples = parse_metrics(await resp.text())
            except Exception as exc:  # noqa: BLE001 - any failure means the worker is unreachable
                reason = str(exc) or type(exc).__name__
                self.status[name] = {"url": url, "up": False, "error": f"unreachable ({reason})"[:200]}
                continue
            self.status[name] = {"url": url, "up": True, "error": None}
            for key, value in samples.items():
                snap.samples[key] = snap.samples.get(key, 0.0) + value
        return snap

    async def run_scraper(self) -> None:
        async with ClientSession(timeout=ClientTimeout(total=max(self.interval, 0.5))) as session:
            while True:
                snap = await self.scrape(session)
                if self._last is not None:
                    self.points.append(derive(self._last, snap))
                self._last = snap
                await asyncio.sleep(self.interval)

    def state(self) -> dict[str, Any]:
        return {"workers": self.status, "points": list(self.points), "time": time.time(),
                "namespace": self.namespace}

    def web_app(self) -> web.Application:
        page = resources.files("streamer.observability").joinpath("static/dashboard.html").read_text(encoding="utf-8")
        headers = {"Content-Security-Policy": content_security_policy(page), "X-Content-Type-Options": "nosniff"}

        async def index(request: web.Request) -> web.Response:
            return web.Response(text=page, content_type="text/html", headers=headers)

        async def api_state(request: web.Request) -> web.Response:
            return web.json_response(self.state())

        app = web.Application()
        app.router.add_get("/", index)
        app.router.add_get("/api/state", api_state)

        async def start_scraper(app: web.Application) -> None:
            app[SCRAPER] = asyncio.create_task(self.run_scraper())

        async def stop_scraper(app: web.Application) -> None:
            app[SCRAPER].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app[SCRAPER]

        app.on_startup.append(start_scraper)
        app.on_cleanup.append(stop_scraper)
        return app

    async def serve(self, host: str, port: int) -> web.AppRunner:
        runner = web.AppRunner(self.web_app(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()  # stops the scraper the startup hook began
            raise
        return runner


class DashboardThread:
    """The dashboard served from a background thread (for ``streamer demo --dashboard`` and tests)."""

    def __init__(self, dashboard: Dashboard, host: str, port: int) -> None:
        self.dashboard, self.host, self.port = dashboard, host, port
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.runner = self.loop.run_until_complete(self.dashboard.serve(self.host, self.port))
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def start(self) -> "DashboardThread":
        self.thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise DashboardError(f"the dashboard could not listen on {self.host}:{self.port} ({self._error}); "
                                 f"pick another --dashboard-port")
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
