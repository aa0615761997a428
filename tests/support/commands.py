"""A command runner that records argv lists instead of running them.

For ``daemon.cli.autostart.Host.run``: tests must never reach the real user's
systemd, launchd or registry. Answers are given per program name (``systemctl``,
``launchctl``, ``reg``); anything not given answers exit code 0 with no output.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["RecordingRunner"]


@dataclass
class RecordingRunner:
    answers: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        code, out, err = self.answers.get(argv[0], (0, "", ""))
        return subprocess.CompletedProcess(list(argv), code, out, err)
