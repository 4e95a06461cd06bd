"""``UploadGuard`` with real decoding (``media.decode_audio``), no server: the fast tier of test_uploads.py."""

from __future__ import annotations

import gc
import io
import threading

import numpy as np
import pytest
import soundfile as sf

from stream_server.errors import Overloaded, ShuttingDown
from stream_server.media import decode_audio
from stream_server.uploads_guard import UploadGuard


def wav_of(seconds: float) -> io.BytesIO:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * 16000), dtype=np.int16), 16000, format="WAV", subtype="PCM_16")
    buffer.seek(0)
    return buffer


def test_decoded_audio_is_counted_until_the_array_is_gone() -> None:
    guard = UploadGuard(max_decodes=4, max_audio_s=40)
    first = decode_audio(wav_of(30), filename="a.wav", max_duration_s=40, guard=guard)
    assert first.dtype == np.int16 and guard.held_s == pytest.approx(30)
    view = first[16000:32000]  # a chunk handed to the model keeps the whole array alive
    with pytest.raises(Overloaded) as info:
        decode_audio(wav_of(15), filename="b.wav", max_duration_s=40, guard=guard)
    assert info.value.http_status == 503 and info.value.code == "overloaded"
    assert guard.held_s == pytest.approx(30) and guard.decoding == 0  # the refused decode gave its part back
    del first
    gc.collect()
    assert guard.held_s == pytest.approx(30)
    del view
    gc.collect()
    assert guard.held_s == 0
    assert len(decode_audio(wav_of(15), filename="b.wav", max_duration_s=40, guard=guard)) == 15 * 16000


def test_decodes_beyond_the_bound_are_refused_and_close_stops_a_decode_under_way() -> None:
    guard = UploadGuard(max_decodes=1, max_audio_s=4 * 3600)
    outcome: list[BaseException] = []
    entered = threading.Event()

    class SlowReader(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            entered.set()
            return super().read(4096 if size is None or size < 0 else min(size, 4096))

    def decode() -> None:
        try:
            decode_audio(SlowReader(wav_of(1800).getvalue()), filename="long.wav", max_duration_s=3600, guard=guard)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    worker = threading.Thread(target=decode)
    worker.start()
    assert entered.wait(5)
    with pytest.raises(Overloaded):
        decode_audio(wav_of(1), filename="b.wav", max_duration_s=60, guard=guard)
    guard.close()
    worker.join(30)
    assert outcome and isinstance(outcome[0], ShuttingDown) and outcome[0].http_status == 503
    assert guard.held_s == 0 and guard.decoding == 0
    with pytest.raises(ShuttingDown):
        decode_audio(wav_of(1), filename="b.wav", max_duration_s=60, guard=guard)
