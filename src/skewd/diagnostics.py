"""Warnings about bad input, counted by kind, with a few examples each.

Readers, importers, the merger and the checker never crash on bad input: what
they can skip or repair they count here; what leaves nothing usable raises
InputFileError. Kinds used across skewd:

  malformed_json, missing_field, bad_id, bad_time, unknown_kind, torn_tail,
  foreign_file, unreadable_file, missing_column, schema_version_mixed,
  duplicate_span, duplicate_span_conflict, orphan, parent_cycle,
  parent_in_other_trace, offset_log_unusable
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Warnings:
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def add(self, kind: str, example: str | None = None, count: int = 1) -> None:
        if count <= 0:
            return
        self.counts[kind] += count
        if example is not None:
            ex = self.examples.setdefault(kind, [])
            if len(ex) < self.max_examples:
                ex.append(example)

    def extend(self, other: "Warnings") -> None:
        for k, c in other.counts.items():
            self.counts[k] += c
            ex = self.examples.setdefault(k, [])
            for e in other.examples.get(k, []):
                if len(ex) < self.max_examples:
                    ex.append(e)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def as_dict(self) -> dict:
        return {k: {"count": c, "examples": self.examples.get(k, [])}
                for k, c in sorted(self.counts.items())}

    def lines(self) -> list[str]:
        out = []
        for k, c in sorted(self.counts.items()):
            ex = self.examples.get(k)
            out.append(f"{k}: {c}" + (f" (e.g. {ex[0]})" if ex else ""))
        return out
