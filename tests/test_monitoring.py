"""Metrics, dashboard and logs: counts that match the topics, a live page in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from streamer.kafka import free_port
from streamer.records.catalogue import DEAD_LETTER, ESCALATIONS, EVENTS, PREDICTIONS
from streamer.observability.dashboard import Dashboard, DashboardThread, parse_metrics, quantile
from streamer.datasets import load_examples
from streamer.workers.supervisor import WorkerProcesses
from streamer.kafka.topic_io import produce

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return parse_metrics(resp.read().decode())


def value(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lbls), v in samples.items() if n == name and all(dict(lbls).get(k) == x
                                                                        for k, x in labels.items()))


def start_workers(tmp_path, settings, teacher, **env):
    """A student and a teacher worker with metrics; the student a replica (it learns the labels itself, so its own
    label counters are checked against the teacher's answers)."""
    ports = {"student": free_port(), "teacher": free_port()}
    workers = WorkerProcesses(settings.replace(learning="replica"), settings.broker_url, teacher, tmp_path, env=env,
                              metrics_ports=ports)
    workers.start("student")
    workers.start("teacher")
    workers.wait_ready(timeout=120)
    return workers, ports


def stream(settings, n: int, bad: int = 0, rate: float = 0.0) -> list[str]:
    examples = load_examples("rotten_tomatoes", split="stream", limit=n)
    values = [orjson.dumps({"id": f"m{i}", "text": ex.text}) for i, ex in enumerate(examples)]
    values += [b"not json %d" % i for i in range(bad)]
    asyncio.run(produce(settings, EVENTS, values, rate=rate, progress=False))
    return [f"m{i}" for i in range(n)]


@pytest.mark.integration
def test_metrics_match_the_records_published(tmp_path, quick_teacher, settings, topic_records):
    workers, ports = start_workers(tmp_path, settings, quick_teacher)
    try:
        ids = stream(settings, 600, bad=7, rate=300)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            s, t = scrape(ports["student"]), scrape(ports["teacher"])
            answered = value(s, "streamer_predictions_total") + value(t, "streamer_predictions_total")
            if answered >= len(ids):
                break
            time.sleep(1)
        time.sleep(2)  # let the producers flush and the gauges tick
        s, t = scrape(ports["student"]), scrape(ports["teacher"])
        predictions = topic_records(settings, PREDICTIONS)
        escalations = topic_records(settings, ESCALATIONS)
        dead = topic_records(settings, DEAD_LETTER)
    finally:
        workers.stop()
    by_source = {src: sum(p["source"] == src for p in predictions) for src in ("student", "teacher")}
    assert value(s, "streamer_events_total") == len(ids)
    assert value(s, "streamer_predictions_total", source="student") == by_source["student"]
    assert value(t, "streamer_predictions_total", source="teacher") == by_source["teacher"]
    assert by_source["student"] + by_source["teacher"] == len(ids)
    assert value(s, "streamer_escalations_total") == len(escalations)
    assert value(s, "streamer_escalations_total", reason="audit") == sum(e["reason"] == "audit" for e in escalations)
    assert value(s, "streamer_dead_letters_total", reason="invalid_json") == len(dead) == 7
    assert value(s, "streamer_labels_learned_total") == by_source["teacher"]
    assert value(t, "streamer_teacher_batch_size_sum") == by_source["teacher"]
    assert value(s, "streamer_decision_latency_seconds_count") == by_source["student"]
    assert value(s, "streamer_agreement_target") == settings.target
    assert 0.0 <= value(s, "streamer_threshold") <= 1.0
    assert any(n == "streamer_consumer_lag" for n, _ in s)


def test_latency_quantiles_come_from_the_buckets():
    buckets = {0.01: 50.0, 0.1: 90.0, 1.0: 99.0, float("inf"): 100.0}
    assert quantile(buckets, 0.5) == 0.01 and quantile(buckets, 0.9) == 0.1 and quantile(buckets, 0.99) == 1.0
    assert quantile({}, 0.5) is None


def test_json_logs_are_one_object_per_line(tmp_path):
    url = f"kafka://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "streamer", "worker", "student", "--broker", url,
                           "--broker-timeout", "1", "--data-dir", str(tmp_path), "--log-format", "json"],
                          capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert lines and lines[0]["level"] == "INFO" and "starting the student worker" in lines[0]["message"]


def find_chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def require_chromium() -> tuple[str, str]:
    """Chromium and chromedriver; skips the test where there are none (fails under STREAMER_REQUIRE_BROWSER)."""
    found = find_chromium()
    if found is None:
        if os.environ.get("STREAMER_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)")
    return found


def headless_chromium():
    """A Selenium driver for headless Chromium (see :func:`require_chromium`)."""
    found = require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(found[1]), options=options)


@pytest.mark.integration
def test_dashboard_shows_live_traffic_in_headless_chromium(tmp_path, quick_teacher, settings):
    require_chromium()
    workers, ports = start_workers(tmp_path, settings, quick_teacher)
    dash = DashboardThread(Dashboard({"student": f"http://127.0.0.1:{ports['student']}/metrics",
                                      "teacher": f"http://127.0.0.1:{ports['teacher']}/metrics",
                                      "ghost": f"http://127.0.0.1:{free_port()}/metrics"}),
                           "127.0.0.1", free_port()).start()
    feeder = threading.Thread(target=stream, args=(settings, 1500), kwargs={"rate": 100})
    feeder.start()
    driver = headless_chromium()
    try:
        driver.get(dash.url)
        deadline = time.monotonic() + 90
        rate = share = 0.0
        while time.monotonic() < deadline:
            time.sleep(1)
            rate = float(driver.find_element("id", "chart-rate").get_attribute("data-max") or 0)
            share = float(driver.find_element("id", "chart-share").get_attribute("data-max") or 0)
            if rate > 0 and share > 0 and int(driver.find_element("id", "chart-rate").get_attribute("data-points")) >= 5:
                break
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        ghost = driver.find_element("id", "worker-ghost").text
        student = driver.find_element("id", "worker-student").text
    finally:
        driver.quit()
        feeder.join()
        dash.stop()
        workers.stop()
    assert rate > 0 and share > 0, (rate, share)
    assert "unreachable" in ghost and student == "student: up"
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


MARKUP = "<img src=x onerror=window.pwned=1>"


class MarkupErrorHandler(http.server.BaseHTTPRequestHandler):
    """A "worker" whose metrics endpoint fails with markup in its HTTP reason phrase."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(500, MARKUP)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_dashboard_page_puts_no_data_into_the_page_as_markup():
    page = (Path(__file__).resolve().parent.parent / "streamer/observability/static/dashboard.html").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in page, sink


def test_dashboard_page_runs_only_its_own_script():
    dash = DashboardThread(Dashboard({}), "127.0.0.1", free_port()).start()
    try:
        with urllib.request.urlopen(dash.url, timeout=5) as resp:
            policy, page = resp.headers["Content-Security-Policy"], resp.read().decode()
    finally:
        dash.stop()
    script = page.split("<script>")[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    script_src = policy.split("script-src ")[1].split(";")[0]
    assert script_src == f"'sha256-{digest}'", policy


def test_dashboard_shows_a_worker_error_with_markup_as_text_in_headless_chromium():
    driver = headless_chromium()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), MarkupErrorHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dash = DashboardThread(Dashboard({"evil": f"http://127.0.0.1:{server.server_port}/metrics"}, interval=0.2),
                           "127.0.0.1", free_port()).start()
    try:
        driver.get(dash.url)
        deadline, text = time.monotonic() + 30, ""
        while MARKUP not in text and time.monotonic() < deadline:
            time.sleep(0.2)  # read in one script: the page rebuilds the list on every poll
            text = driver.execute_script("return document.getElementById('worker-evil')?.textContent ?? ''")
        strays = driver.execute_script("return document.querySelectorAll('#workers *:not(span.worker)').length")
        pwned = driver.execute_script("return window.pwned")
        polls = driver.execute_script("return window.dashboard.polls")
    finally:
        driver.quit()
        dash.stop()
        server.shutdown()
        server.server_close()
    assert MARKUP in text and text.startswith("evil: unreachable"), text
    assert strays == 0 and pwned is None  # no element made from the error, no handler ran
    assert polls > 0  # the page's own script ran under its content security policy
