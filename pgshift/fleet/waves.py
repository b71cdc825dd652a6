"""The order of a fleet deploy: this shard's targets, canaries first, then waves.

A shard ``K/N`` (1 <= K <= N) holds the targets whose ``sha256(name) % N`` is ``K - 1``: the split
depends on the names alone, so every job of a CI matrix computes the same one and the N shards are
disjoint and cover the fleet. Each shard runs its own canaries.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pgshift.errors import ConfigError
from pgshift.fleet.targets import Fleet, Target

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str | None) -> Shard | None:
        if text is None or not text.strip():
            return None
        match = _SHARD.fullmatch(text)
        if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
            raise ConfigError(f"--shard {text!r} is not K/N with 1 <= K <= N; e.g. --shard 3/8 for the third of eight")
        return cls(int(match.group(1)), int(match.group(2)))

    def holds(self, name: str) -> bool:
        return int.from_bytes(hashlib.sha256(name.encode()).digest(), "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Wave:
    number: int  # 0: the canaries
    targets: list[Target]

    @property
    def canaries(self) -> bool:
        return self.number == 0


def select(fleet: Fleet, shard: Shard | None) -> list[Target]:
    return [t for t in fleet.targets if shard is None or shard.holds(t.name)]


def plan(fleet: Fleet, targets: list[Target]) -> list[Wave]:
    """Wave 0 (the targets the file marks ``wave = 0``), then the explicit waves in order, then the
    rest in waves of ``wave_size``, in the file's order."""
    canaries = [t for t in targets if t.wave == 0]
    explicit = sorted({t.wave for t in targets if t.wave}, key=int)
    waves = [Wave(0, canaries)] if canaries else []
    for number in explicit:
        waves.append(Wave(number, [t for t in targets if t.wave == number]))
    rest = [t for t in targets if t.wave is None]
    start = (explicit[-1] if explicit else 0) + 1
    for i in range(0, len(rest), fleet.wave_size):
        waves.append(Wave(start + i // fleet.wave_size, rest[i:i + fleet.wave_size]))
    return waves
