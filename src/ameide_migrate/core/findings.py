"""What the lint found: a rule's finding at the level its environment gives the rule. Outcomes,
errors and fixes carry findings; the lint makes them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Level(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    OFF = "off"


@dataclass(frozen=True)
class Finding:
    file: str
    """The script, relative to the SQL tree's root (POSIX)."""
    line: int
    """Counted from 1, in the file as written."""
    rule: str
    level: Level
    message: str
    fix: str | None
    """What squawk (or this module) suggests doing instead."""

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "rule": self.rule,
            "level": self.level.value,
            "message": self.message,
            "fix": self.fix,
        }

    def describe(self) -> str:
        fix = f". Fix: {self.fix}" if self.fix else ""
        return f"{self.file} line {self.line}: {self.rule} ({self.level}): {self.message}{fix}"
