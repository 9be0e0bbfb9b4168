"""Print the fault suite's table at the end of the run (and write it where asked)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.servers import redis_server_binary, server_kind

from .load import RESULTS, Tally, full_mode, table

#: Where ``nox -s chaos`` asks for the table as a Markdown file.
REPORT_ENV = "REDIS_SESSION_CHAOS_REPORT"


def _server() -> str:
    """Which server the run used, e.g. ``valkey (/path/valkey-server)``."""
    try:
        return f"{server_kind()} ({redis_server_binary()})"
    except RuntimeError as exc:  # reported by the tests themselves
        return f"unknown ({exc})"


def details(tally: Tally) -> list[str]:
    """The lines under the table for one scenario: figures, history verdict, notes."""
    kinds = [f"{k} {v}" for k, v in sorted(tally.failure_kinds.items())]
    lines = [
        f"{tally.scenario} [{tally.client}]: {tally.seconds:.1f}s, {tally.ok} ok, "
        f"{tally.cancelled} cancelled on purpose, slowest failure {tally.slowest_failure:.2f}s "
        f"({tally.slowest_failure_net:.2f}s less the client's own stalls; timeout "
        f"{tally.timeout:g}s), lost before the fault {tally.lost_before_fault}; failures: "
        f"{', '.join(kinds) or 'none'}",
    ]
    verdict = tally.verdict
    if verdict is not None:
        lines.append(
            f"    history check: {verdict.summary()} ({verdict.reads} reads, {verdict.writes} "
            f"writes, {verdict.sessions} sessions; {verdict.lost_creates} of the lost were "
            f"creates; {verdict.sweep_violations} found by the final sweep)"
        )
        lines += [f"      {line}"[:400] for line in verdict.details()[:8]]
    fault = tally.marks.get("fault")
    if tally.lost_acked_at and fault is not None:
        span = sorted(t - fault for t in tally.lost_acked_at)
        lines.append(
            f"    lost writes had been acknowledged {span[0]:+.2f}s to {span[-1]:+.2f}s "
            f"from the (last) fault"
        )
    lines += [f"    {note}" for note in tally.notes[:40]]
    lines += [f"    e.g. {kind}: {ex}" for kind, ex in sorted(tally.failure_examples.items())]
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The chaos table: one row per scenario run, in run order, then the details."""
    if not RESULTS:
        return
    form = "full" if full_mode() else "reduced (REDIS_SESSION_CHAOS=full for the long form)"
    server = _server()
    terminalreporter.section(f"chaos: faults under mixed load, {form}, on {server}")
    text = table(RESULTS)
    terminalreporter.write_line(text)
    lines = [line for tally in RESULTS for line in details(tally)]
    for line in lines:
        terminalreporter.write_line(line)
    path = os.environ.get(REPORT_ENV)
    if path:
        body = "\n".join(lines)
        Path(path).write_text(
            f"# Chaos report ({form})\n\nServer: {server}\n\n{text}\n\n## Details\n\n"
            f"```\n{body}\n```\n"
        )
        terminalreporter.write_line(f"written to {path}")
