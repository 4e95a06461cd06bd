"""Start WhisperLive's websocket server (faster-whisper backend) on a local CTranslate2 model.

Run with the WhisperLive venv's interpreter (``.bench-venvs/whisperlive/bin/python``), never ours: this file
imports only WhisperLive. The package ships no server script (the repository's ``run_server.py`` is not in the
wheel), so this mirrors that script's call with the options the benchmark needs: one shared model
(``single_model``, as with any custom model path), enough client slots for the sweep, ``OMP_NUM_THREADS`` set
to ``--omp-num-threads`` unless the environment sets it (``run_server.py`` does the same, default 1), and the
batch settings of its README when ``--batch`` is given.
"""

import argparse
import logging
import os


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--max-clients", type=int, default=64)
    parser.add_argument("--omp-num-threads", type=int, default=1, help="run_server.py's default")
    parser.add_argument("--batch", action="store_true", help="WhisperLive's cross-client batch inference")
    parser.add_argument("--batch-max-size", type=int, default=16, help="WhisperLive's default")
    parser.add_argument("--batch-window-ms", type=int, default=50, help="WhisperLive's default")
    parser.add_argument("--batch-max-admissions-per-s", type=float, default=5.0, help="WhisperLive's default")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.omp_num_threads))  # before CTranslate2 loads
    from whisper_live.server import TranscriptionServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    TranscriptionServer().run(
        "127.0.0.1",
        port=args.port,
        backend="faster_whisper",
        faster_whisper_custom_model_path=args.model_dir,
        single_model=True,
        max_clients=args.max_clients,
        max_connection_time=7200,
        batch_enabled=args.batch,
        batch_max_size=args.batch_max_size,
        batch_window_ms=args.batch_window_ms,
        batch_max_admissions_per_s=args.batch_max_admissions_per_s,
    )


if __name__ == "__main__":
    main()
