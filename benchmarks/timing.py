"""Interleaved timing: every contender runs once per round, so machine load hits them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Wall-clock seconds of each repetition of one contender."""

    name: str
    times: list[float] = field(default_factory=list)
    result: object = None
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def min(self) -> float:
        return min(self.times) if self.times else float("nan")


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for queued device work (a no-op on CPU)."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int, device: str = "cpu",
                warmup: int = 1) -> dict[str, Timing]:
    """Run each contender ``warmup`` times, then ``repeats`` rounds of one run each.

    Rounds rotate the starting contender, so no one always runs first after a pause.
    A contender that raises is reported with its error and skipped from then on.
    """
    sync = synchronizer(device)
    out = {name: Timing(name) for name in contenders}
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            try:
                out[name].result = contenders[name]()
                sync()
            except Exception as exc:  # noqa: BLE001 - a peer failing is a result too
                out[name].error = f"{type(exc).__name__}: {exc}"[:200]
                break
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if out[name].error:
                continue
            sync()
            start = time.perf_counter()
            try:
                out[name].result = contenders[name]()
                sync()
            except Exception as exc:  # noqa: BLE001
                out[name].error = f"{type(exc).__name__}: {exc}"[:200]
                continue
            out[name].times.append(time.perf_counter() - start)
    return out
