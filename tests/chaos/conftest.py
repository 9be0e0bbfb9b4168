"""Print the fault suite's table at the end of the run (and write it where asked)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .load import RESULTS, full_mode, table

#: Where ``nox -s chaos`` asks for the table as a Markdown file.
REPORT_ENV = "REDIS_SESSION_CHAOS_REPORT"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The chaos table: one row per scenario run, in run order."""
    if not RESULTS:
        return
    form = "full" if full_mode() else "reduced (REDIS_SESSION_CHAOS=full for the long form)"
    terminalreporter.section(f"chaos: faults under mixed load, {form}")
    text = table(RESULTS)
    terminalreporter.write_line(text)
    for tally in RESULTS:
        details = [f"{k} {v}" for k, v in sorted(tally.failure_kinds.items())]
        line = (
            f"{tally.scenario}: {tally.seconds:.1f}s, {tally.ok} ok, {tally.cancelled} cancelled "
            f"on purpose, slowest failure "
            f"{tally.slowest_failure:.2f}s (timeout {tally.timeout:g}s), lost before the fault "
            f"{tally.lost_before_fault}; failures: {', '.join(details) or 'none'}"
        )
        terminalreporter.write_line(line)
        fault = tally.marks.get("fault")
        if tally.lost_acked_at and fault is not None:
            span = sorted(t - fault for t in tally.lost_acked_at)
            terminalreporter.write_line(
                f"    lost writes had been acknowledged {span[0]:+.2f}s to {span[-1]:+.2f}s "
                f"from the (last) fault"
            )
        for note in tally.notes[:5]:
            terminalreporter.write_line(f"    {note}")
        for kind, example in sorted(tally.failure_examples.items()):
            terminalreporter.write_line(f"    e.g. {kind}: {example}")
    path = os.environ.get(REPORT_ENV)
    if path:
        Path(path).write_text(f"# Chaos report ({form})\n\n{text}\n")
        terminalreporter.write_line(f"written to {path}")
