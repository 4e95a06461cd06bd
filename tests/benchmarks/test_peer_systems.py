"""The system table: every peer configuration the benchmark promises exists, runs with the flags it claims,
and a configuration that cannot run here says why instead of vanishing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.peers import LAUNCHERS_DIR, PEERS
from benchmarks.run import ALL_SYSTEMS, DEFAULT_SYSTEMS
from benchmarks.servers import system_specs

MODEL = "/models/tiny.en-ct2"


def argv(name: str) -> list[str]:
    return system_specs(MODEL, "cpu", 500)[name].command(8123)


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_every_peer_configuration_is_in_the_default_run():
    assert set(DEFAULT_SYSTEMS) == set(ALL_SYSTEMS) == set(system_specs(MODEL, "cpu", 500))
    assert {"whisperlive", "whisperlive_batch", "whisperlivekit", "whisperlivekit_la"} <= set(DEFAULT_SYSTEMS)


def test_whisperlivekit_runs_its_default_policy_and_localagreement_on_the_same_model():
    simul, la = argv("whisperlivekit"), argv("whisperlivekit_la")
    assert flag(simul, "--backend-policy") == "simulstreaming"
    assert flag(simul, "--encoder-model-path") == MODEL
    assert flag(la, "--backend-policy") == "localagreement"
    assert flag(la, "--model_dir") == MODEL
    for args in (simul, la):
        assert flag(args, "--port") == "8123"
        assert flag(args, "--min-chunk-size") == "0.1"
        assert "--pcm-input" in args


def test_simulstreaming_without_pytorch_weights_is_reported_with_its_reason(monkeypatch):
    monkeypatch.delenv("BENCH_WHISPER_TORCH", raising=False)  # and MODEL has no converted copy
    spec = system_specs(MODEL, "cpu", 500)["whisperlivekit"]
    assert spec.unavailable is not None and "PyTorch Whisper weights" in spec.unavailable
    assert system_specs(MODEL, "cpu", 500)["whisperlivekit_la"].unavailable is None


def test_simulstreaming_decodes_with_the_configured_checkpoint(monkeypatch, tmp_path):
    checkpoint = tmp_path / "tiny.en.pt"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setenv("BENCH_WHISPER_TORCH", str(checkpoint))
    spec = system_specs(MODEL, "cpu", 500)["whisperlivekit"]
    assert spec.unavailable is None
    assert flag(spec.command(1), "--decoder-model-path") == str(checkpoint)


def test_whisperlive_batch_passes_its_readme_batch_settings_to_a_launcher_that_accepts_them():
    args = argv("whisperlive_batch")
    assert "--batch" in args and flag(args, "--batch-max-size") == "8" and flag(args, "--batch-window-ms") == "50"
    assert float(flag(args, "--batch-max-admissions-per-s")) >= 512  # a level's clients all start at once
    launcher = str(LAUNCHERS_DIR / "whisperlive_server.py")
    # the launcher imports WhisperLive only after parsing, so --help runs under any interpreter
    help_text = subprocess.run([sys.executable, launcher, "--help"], capture_output=True, text=True, check=True).stdout
    for option in [a for a in args[2:] if a.startswith("--")]:
        assert option in help_text


@pytest.mark.parametrize("name", ["whisperlivekit", "whisperlivekit_la"])
def test_whisperlivekit_accepts_every_flag_we_pass(name, tmp_path, monkeypatch):
    python = PEERS["whisperlivekit"].python
    if not python.exists():
        pytest.skip(f"WhisperLiveKit venv absent ({python}); `python -m benchmarks.peers` creates it")
    monkeypatch.setenv("BENCH_WHISPER_TORCH", str(tmp_path / "tiny.en.pt"))
    (tmp_path / "tiny.en.pt").write_bytes(b"")
    args = argv(name)[1:]
    code = (
        "import sys; from whisperlivekit.parse_args import parse_args; sys.argv = ['wlk', *sys.argv[1:]]; parse_args()"
    )
    proc = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-800:]


def test_the_pytorch_copy_of_the_ct2_model_transcribes_like_it(tmp_path):
    """SimulStreaming decodes with the converted weights: they must be the model's, heads included."""
    python = PEERS["whisperlivekit"].python
    if not python.exists():
        pytest.skip(f"WhisperLiveKit venv absent ({python}); `python -m benchmarks.peers` creates it")
    from stream_server.config import embedded_model_path

    out = tmp_path / "tiny.en.pt"
    converter = str(LAUNCHERS_DIR / "ct2_to_whisper_torch.py")
    subprocess.run([str(python), converter, embedded_model_path(), str(out)], check=True, timeout=300)
    speech = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "the quick brown fox jumps over the lazy dog"], check=True)
    code = (
        "import sys, wave, numpy as np; from whisperlivekit.whisper import load_model, _ALIGNMENT_HEADS\n"
        "import gzip, base64\n"
        "mask = lambda b: np.frombuffer(gzip.decompress(base64.b85decode(b)), bool)\n"
        "heads = open(sys.argv[1] + '.alignment_heads').read().strip()\n"
        "assert (mask(heads.encode()) == mask(_ALIGNMENT_HEADS['tiny.en'])).all()\n"
        "m = load_model(sys.argv[1], device='cpu', custom_alignment_heads=heads)\n"
        "w = wave.open(sys.argv[2]); x = np.frombuffer(w.readframes(w.getnframes()), np.int16)\n"
        "x = np.interp(np.arange(0, len(x), w.getframerate() / 16000), np.arange(len(x)), x) / 32768\n"
        "print(m.transcribe(x.astype(np.float32), language='en', fp16=False)['text'])"
    )
    proc = subprocess.run([str(python), "-c", code, str(out), str(speech)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-800:]
    text = proc.stdout.lower()
    assert "quick" in text and "lazy dog" in text, text
