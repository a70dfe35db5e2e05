"""The project's tasks, written as any Celery user writes them: nothing here knows MCP."""

from __future__ import annotations

import hashlib
import time

from celery import chain, chord, shared_task

from proj.celery import app


@app.task(bind=True)
def build_report(self, rows: int, delay: float = 0.05) -> dict[str, object]:
    """Build a report of `rows` rows, reporting progress as it goes."""
    digest = hashlib.sha256()
    for row in range(1, rows + 1):
        time.sleep(delay)
        digest.update(str(row).encode())
        self.update_state(
            state="PROGRESS",
            meta={"current": row, "total": rows, "description": f"row {row} of {rows}"},
        )
    return {"rows": rows, "checksum": digest.hexdigest()[:16]}


class RateServiceDown(ConnectionError):
    """The exchange-rate service did not answer."""


@shared_task(
    bind=True,
    autoretry_for=(RateServiceDown,),
    retry_kwargs={"max_retries": 3, "countdown": 0.2},
    retry_backoff=False,
)
def fetch_rate(self, currency: str, failures: int = 0) -> dict[str, object]:
    """The exchange rate of `currency`; the service fails the first `failures` calls."""
    if self.request.retries < failures:
        raise RateServiceDown(f"rate service unavailable for {currency}")
    return {"currency": currency, "rate": 1.25, "attempts": self.request.retries + 1}


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def double(x: int) -> int:
    return 2 * x


@app.task
def start_pipeline(start: int) -> str:
    """Run the number pipeline on `start` (three chained tasks); returns the chain's id."""
    return str(chain(add.s(start, 1), double.s(), double.s()).apply_async().id)


@app.task
def notify(message: str) -> None:
    """Tell the team (the demo's mail server is always down)."""
    raise ConnectionError(f"mail server unavailable: {message!r} not sent")


@app.task(bind=True)
def publish_report(self, rows: int) -> dict[str, object]:
    """Tell the team a report is coming (on the side), then build it."""
    notify.delay(f"a report of {rows} rows is on its way")
    for row in range(1, rows + 1):
        time.sleep(0.1)
        self.update_state(state="PROGRESS", meta={"current": row, "total": rows})
    return {"rows": rows}


@app.task
def render_pdf(pages: int) -> dict[str, object]:
    """Render a PDF of `pages` pages (routed to the pdf queue's workers)."""
    return {"pages": pages, "worker": render_pdf.request.hostname}


@app.task
def measure(station: str, seconds: float = 0.1) -> dict[str, object]:
    """One station's reading; takes `seconds`."""
    if station.startswith("broken"):
        raise ValueError(f"station {station} does not answer")
    time.sleep(seconds)
    return {"station": station, "reading": len(station) * 1.5}


@app.task
def summarise(readings: list[dict[str, object]]) -> dict[str, object]:
    """The mean of the readings."""
    values = [float(str(r["reading"])) for r in readings]
    return {"stations": len(values), "mean": sum(values) / len(values)}


@app.task(bind=True)
def survey(self, stations: list[str], seconds: float = 0.1) -> dict[str, object]:
    """Read every station in parallel, then summarise the readings (a chord)."""
    return self.replace(chord([measure.s(s, seconds) for s in stations], summarise.s()))
