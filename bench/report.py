"""bench/RESULTS.md: machine, versions, settings, the table, details and the profile.
Hand-written notes between the NOTES markers survive a re-run."""

from __future__ import annotations

import math
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import redis

from bench.stats import Row

NOTES_BEGIN = "<!-- notes:begin (kept when the benchmark rewrites this file) -->"
NOTES_END = "<!-- notes:end -->"


def machine() -> list[str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    load = Path("/proc/loadavg").read_text().split()[:3]
    return [
        f"- CPUs: {os.cpu_count()} x {model}",
        f"- Memory: {mem_kb / 1024 / 1024:.1f} GiB; kernel {platform.release()}",
        f"- Load average when the report was written: {' '.join(load)}",
    ]


def versions(client: redis.Redis) -> list[str]:
    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    server = client.info("server")["redis_version"]
    packages = ["celery", "kombu", "billiard", "redis", "starlette", "uvicorn"]
    packages += ["sse-starlette", "h11", "httptools", "uvloop", "py-spy"]
    return [
        f"- python {platform.python_version()} ({sys.implementation.name})",
        f"- redis-server {server}",
        *(f"- {'redis-py' if p == 'redis' else p} {v(p)}" for p in packages),
    ]


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit in ("of N", "conns"):
        return f"{value:.0f}"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}"


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| scenario | metric | run | bridge | raw Celery | ratio | target | met? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}x"
        if r.note and r.ratio is not None:
            ratio += f" ({r.note})"
        met = "" if r.met is None else ("met" if r.met else "**not met**")
        lines.append(
            f"| {r.scenario} | {r.metric} | {r.run} | {_fmt(r.bridge, r.unit)} | "
            f"{_fmt(r.raw, r.unit)} | {ratio} | {r.target} | {met} |"
        )
    return lines


def targets(rows: list[Row]) -> list[str]:
    by_target: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        if r.target:
            by_target.setdefault((r.scenario, r.metric, r.target), []).append(r)
    lines = []
    for (scenario, metric, target), found in by_target.items():
        runs = [r for r in found if r.met is not None]
        all_met = all(r.met for r in runs)
        some = any(r.met for r in runs)
        verdict = "met in every run" if all_met else ("met in some runs" if some else "not met")
        figures = ", ".join(
            f"run {r.run}: {_fmt(r.bridge, r.unit)}"
            + ("" if r.ratio is None else f" ({r.ratio:.2f}x)")
            for r in runs
        )
        lines.append(f"- {scenario}, {metric}: target {target} -> **{verdict}** ({figures})")
    return lines


def existing_notes(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text()
    if NOTES_BEGIN not in text or NOTES_END not in text:
        return []
    inner = text.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0]
    return inner.strip("\n").splitlines()


def write(
    path: Path,
    *,
    command: str,
    seconds: float,
    client: redis.Redis,
    settings: list[str],
    rows: list[Row],
    details: dict[str, list[str]],
    profile: list[str],
) -> None:
    notes = existing_notes(path)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmark: the bridge against raw Celery",
        "",
        f"Written by `{command}` on {now}; the whole command took {seconds / 60:.1f} min.",
        "Every figure of the bridge is next to raw Celery's figure measured in the same run "
        "on the same Redis, machine and worker settings; ratio = bridge / raw unless noted.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
        "## Versions",
        "",
        *versions(client),
        "",
        "## Settings",
        "",
        *settings,
        "",
        "## Results",
        "",
        *table(rows),
        "",
        "## Targets (issues 6 and 17)",
        "",
        *targets(rows),
        "",
        "## Details and method, per scenario",
        "",
    ]
    for name, lines in details.items():
        out += [f"### {name}", "", *lines, ""]
    out += ["## Profile", "", *(profile or ["(not run)"]), ""]
    out += [NOTES_BEGIN, *notes, NOTES_END, ""]
    path.write_text("\n".join(out))
