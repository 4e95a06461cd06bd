"""On the GPU machine: the benchmark's audio directory from the carried parts (``pack``): the short recordings
as carried, the long ones rebuilt from their segments, gaps and the carried difference, sample for sample.

    python -m benchmarks.gpu_lease.unpack PART_DIR... OUT_DIR   (the last part holds the manifest)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks.audio import write_wav_int16

from .pack import long_recording_segments, rebuilt


def unpack(parts: list[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for wav in part.glob("*.wav"):
            shutil.copy(wav, out / wav.name)
    shutil.copy(parts[-1] / "manifest.jsonl", out / "manifest.jsonl")
    diffs = np.load(parts[-1] / "long_diffs.npz")
    for name, segments in long_recording_segments(out).items():
        samples = (rebuilt(out, segments).astype(np.int32) + diffs[name]).astype(np.int16)
        write_wav_int16(out / name, samples)
        print(f"rebuilt {name}: {len(samples) / 16000:.1f} s")


if __name__ == "__main__":
    unpack([Path(p) for p in sys.argv[1:-1]], Path(sys.argv[-1]))
