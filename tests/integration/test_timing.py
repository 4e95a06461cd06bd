"""Where a final's latency went, end to end: a real server, the embedded model, espeak-ng speech at real-time
pace, protocol v1 ``timing=true``, and the ``stream_final_*_seconds`` histograms of ``/metrics``."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ..conftest import metric_value
from ..helpers import silence, stream_audio, synthesize, to_pcm16

SENTENCES = ("The children are playing football in the park.", "Please send the quarterly report to the finance team.")
STAGES = ("endpointing_ms", "queue_ms", "decode_ms", "send_ms")


def test_finals_with_timing_have_plausible_stages_and_metrics_count_them(live_server) -> None:
    audio = np.concatenate(
        [silence(0.3), synthesize(SENTENCES[0]), silence(1.2), synthesize(SENTENCES[1]), silence(1.2)]
    )
    params = {"timing": "true", "endpointing_ms": "500", "interim_results": "false"}
    result = asyncio.run(stream_audio(live_server.ws_url, to_pcm16(audio), params=params))
    finals = [f for f in result.finals if f["text"]]
    assert len(finals) == 2, result.finals
    for final in finals:
        timing = final["timing"]
        assert final["reason"] == "endpoint" and all(timing[stage] >= 0 for stage in STAGES), final
        assert sum(timing[stage] for stage in STAGES) == pytest.approx(timing["total_ms"], abs=0.3)
        # 500 ms of silence, decided at the end of the 100 ms chunk that completes it (a 30 ms VAD frame later)
        assert 500 <= timing["endpointing_ms"] <= 700, timing
        # the model decodes a few seconds of speech on CPU in well under 3 s; a speculative final may be done
        assert timing["total_ms"] < 3500, timing
        assert timing["decode_ms"] > 5 or timing["speculative"], timing
    print("timing of each final:", [f["timing"] for f in finals])
    for stage in ("endpointing_wait", "queue_wait", "decode", "send"):
        assert metric_value(live_server, f"stream_final_{stage}_seconds_count") >= 2
    # what /metrics adds up is what the finals said: the endpointing waits are at least the 500 ms each
    assert metric_value(live_server, "stream_final_endpointing_wait_seconds_sum") >= 1.0
