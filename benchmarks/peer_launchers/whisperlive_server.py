"""Start WhisperLive's websocket server (faster-whisper backend) on a local CTranslate2 model.

Run with the WhisperLive venv's interpreter (``.bench-venvs/whisperlive/bin/python``), never ours: this file
imports only WhisperLive. The package ships no server script (the repository's ``run_server.py`` is not in the
wheel), so this mirrors that script's call with the options the benchmark needs: one shared model
(``single_model``, as with any custom model path), enough client slots for the sweep, and the model's CPU thread
count left to CTranslate2 (WhisperLive's own default).
"""

import argparse
import logging

from whisper_live.server import TranscriptionServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--max-clients", type=int, default=64)
    parser.add_argument("--batch", action="store_true", help="WhisperLive's cross-client batch inference")
    args = parser.parse_args()
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
    )


if __name__ == "__main__":
    main()
