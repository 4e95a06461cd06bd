"""Pack what a lent GPU machine needs into ``.dev/`` (git-ignored), in parts that each fit one device call.

The machine has Python 3.12, PyTorch and CUDA 13 and no registry, and a call carries at most 64 MiB with the
working tree. Parts (each names its folder in ``carry``):

* ``.dev/w``: cp312 wheels of what the server and the benchmark need and the machine lacks (the versions of this
  venv); PyAV stays behind (``av_stub``);
* ``.dev/m1``, ``.dev/m2``: the model's ``model.bin`` in two parts, its other files and SHA-256;
* ``.dev/a1``, ``.dev/a2``: the short recordings of ``../shared/audio`` the workloads read, the manifest, and the
  difference that rebuilds the long recordings from their segments (``build_audio.py``).

    python -m benchmarks.gpu_lease.pack [--model DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmarks.audio import GAP_S, SAMPLE_RATE, default_audio_dir, load_manifest, read_wav_int16, segment_names
from benchmarks.workloads import load_turn_utterances

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / ".dev"
WHEELS = [  # what the server and the benchmark import and the machine lacks, with their small needs
    *("ctranslate2", "faster-whisper", "webrtcvad-wheels", "websockets", "fastapi", "starlette", "uvicorn"),
    *("pydantic", "pydantic-core", "pydantic-settings", "python-dotenv", "python-multipart", "annotated-types"),
    *("typing-inspection", "annotated-doc", "opentelemetry-api", "jiwer", "rapidfuzz", "whisper-normalizer"),
    *("indic-numtowords", "more-itertools", "text2num"),
]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PART_BYTES = 50_000_000  # with the ~12 MB working tree, under a call's 64 MiB
A1_BYTES = 22_000_000  # the audio that travels beside the model's second part


def download_wheels(dest: Path) -> None:
    specs = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    platforms = [arg for p in (*PLATFORMS, "manylinux1_x86_64", "manylinux_2_5_x86_64") for arg in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version"]
    cmd += ["3.12", "--implementation", "cp", *platforms, "-d", str(dest), *specs]
    subprocess.run(cmd, check=True)


def long_recording_segments(audio_dir: Path) -> dict[str, list[str]]:
    """Each derived long recording of the manifest and the files it was joined from."""
    return {
        entry["audio"]: segment_names(entry)
        for entry in load_manifest(audio_dir)
        if entry.get("kind") == "long_derived" and segment_names(entry)
    }


def rebuilt(audio_dir: Path, segments: list[str]) -> np.ndarray:
    gap = np.zeros(int(round(GAP_S * SAMPLE_RATE)), np.int16)
    parts: list[np.ndarray] = []
    for i, name in enumerate(segments):
        parts.extend([read_wav_int16(audio_dir / name)] + ([gap] if i < len(segments) - 1 else []))
    return np.concatenate(parts)


def pack_audio(audio_dir: Path, first: Path, second: Path, first_bytes: int = A1_BYTES) -> None:
    """The recordings the workloads read, smallest first, up to ``first_bytes`` into ``first`` and the rest into
    ``second`` with the manifest and, per long recording, its difference from its rebuilt segments."""
    longs = long_recording_segments(audio_dir)
    needed = {u.name for u in load_turn_utterances(audio_dir)} | {s for segs in longs.values() for s in segs}
    packed = 0
    for name in sorted(needed, key=lambda n: (audio_dir / n).stat().st_size):
        size = (audio_dir / name).stat().st_size
        part = first if packed + size <= first_bytes else second
        packed += size if part is first else 0
        shutil.copy(audio_dir / name, part / name)
    shutil.copy(audio_dir / "manifest.jsonl", second / "manifest.jsonl")
    diffs = {
        name: (read_wav_int16(audio_dir / name).astype(np.int32) - rebuilt(audio_dir, segs)).astype(np.int16)
        for name, segs in longs.items()
    }
    np.savez_compressed(second / "long_diffs.npz", **diffs)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    from stream_server.config import embedded_model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="CTranslate2 Whisper dir (default: the embedded tiny.en)")
    args = parser.parse_args(argv)
    model = Path(args.model or embedded_model_path())
    audio_dir = default_audio_dir()
    shutil.rmtree(DEV, ignore_errors=True)
    parts = {name: DEV / name for name in ("w", "m1", "m2", "a1", "a2")}
    for folder in parts.values():
        folder.mkdir(parents=True)
    download_wheels(parts["w"])

    weights = (model / "model.bin").read_bytes()
    (parts["m1"] / "model.bin.1").write_bytes(weights[:PART_BYTES])
    (parts["m2"] / "model.bin.2").write_bytes(weights[PART_BYTES:])
    (parts["m2"] / "model.sha256").write_text(hashlib.sha256(weights).hexdigest() + "\n")
    for extra in model.iterdir():
        if extra.name != "model.bin":
            shutil.copy(extra, parts["m2"] / extra.name)

    pack_audio(audio_dir, parts["a1"], parts["a2"])
    for name, folder in parts.items():
        total = sum(f.stat().st_size for f in folder.iterdir())
        print(f".dev/{name}: {len(list(folder.iterdir()))} files, {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
