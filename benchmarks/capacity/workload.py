"""Workload model: when each stream's speaker talks and pauses.

A stream is a list of voiced runs ``(start_s, end_s)`` on its own clock (stream seconds = wall seconds: clients
send in real time). Runs are grouped into turns: inside a turn the speaker breathes between phrases (short
pauses, some longer than the speculative-final tail, most shorter than endpointing); between turns there is a
longer pause. Where utterances actually end is the segmenter's business (``sim.py`` applies its rules).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """Talk and pause lengths (seconds), each drawn uniformly from its range."""

    name: str
    turn_s: tuple[float, float]  # voiced speech per turn, phrase pauses not counted
    turn_pause_s: tuple[float, float]  # silence between turns
    phrase_s: tuple[float, float]  # voiced run between breaths inside a turn
    phrase_pause_s: tuple[float, float]  # breath inside a turn

    def voiced_runs(self, rng: random.Random, duration_s: float, lead_in_s: float = 0.0) -> list[tuple[float, float]]:
        """Voiced runs of one stream from ``lead_in_s`` until ``duration_s`` (the last run is cut there)."""
        runs: list[tuple[float, float]] = []
        t = lead_in_s
        while t < duration_s:
            left = rng.uniform(*self.turn_s)
            while left > 0 and t < duration_s:
                run = min(left, rng.uniform(*self.phrase_s))
                runs.append((t, min(duration_s, t + run)))
                t += run
                left -= run
                if left > 0:
                    t += rng.uniform(*self.phrase_pause_s)
            t += rng.uniform(*self.turn_pause_s)
        return [(a, b) for a, b in runs if b > a]


# Call-center turns; the breaths inside a turn are an assumption (see docs/scaling.md#workload).
CALL_CENTER = Workload("call_center", (2.0, 12.0), (0.8, 1.6), (1.5, 4.0), (0.1, 0.45))
# Read-aloud long recordings, the stream benchmark's audio: what the validation replays (docs/scaling.md#workload).
READ_ALOUD = Workload("read_aloud", (3.0, 9.0), (0.4, 0.9), (1.5, 4.0), (0.1, 0.4))

WORKLOADS = {w.name: w for w in (CALL_CENTER, READ_ALOUD)}
