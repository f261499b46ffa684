"""Peak memory of one IG call, measured in a fresh process (``python -m benchmarks.memory``).

Prints one JSON line: the peak resident set during the call minus the resident set just
before it (``rss_mb``, sampled every millisecond from /proc; covers torch's allocations too),
and the peak of numpy/Python allocations during the call (``tracemalloc_mb``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
import tracemalloc


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _rss_mb() -> float | None:
    """Current resident set (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class PeakSampler(threading.Thread):
    """Samples the current resident set every millisecond; ``peak`` is the largest seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _rss_mb() or 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _rss_mb() or 0.0)
            time.sleep(0.001)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return max(self.peak, _rss_mb() or 0.0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import salplug

    from .models import photo, small_cnn

    torch.set_num_threads(args.threads)
    model = small_cnn(args.device)
    x = torch.from_numpy(photo(args.size)).permute(2, 0, 1)[None].to(args.device)
    explainer = salplug.Explainer(model, batch_size=args.batch_size)
    explainer.explain(x, "integrated_gradients", target=3, steps=2)  # warm up torch's allocator and imports
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    sampled = _rss_mb() is not None
    before = _rss_mb() if sampled else _peak_rss_mb()
    sampler = PeakSampler() if sampled else None
    if sampler is not None:
        sampler.start()
    tracemalloc.start()
    out = explainer.explain(x, "integrated_gradients", target=3, steps=args.steps)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = sampler.stop() if sampler is not None else _peak_rss_mb()
    result = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "rss_mb": round(peak - before, 1),
        "rss_method": "sampled /proc/self/statm" if sampled else "ru_maxrss",
        "tracemalloc_mb": round(traced / 2**20, 1),
        "finite": bool(np.isfinite(out.canonical).all()),
    }
    if args.device.startswith("cuda"):
        result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
