"""Query-string parsing and event rendering of protocol v1 (``dialects/native.py``)."""

from __future__ import annotations

import pytest

from stream_server.config import Settings
from stream_server.decode.types import Word
from stream_server.errors import InvalidParameter
from stream_server.session.events import Final, Partial
from stream_server.session.params import StreamParams
from stream_server.transport.dialects.native import event_message, parse_params

DEFAULTS = Settings().stream_params()


def parse_stream_config(params: dict[str, str], base: StreamParams, multilingual: bool) -> StreamParams:
    return parse_params({k: [v] for k, v in params.items()}, base, multilingual)


def test_every_parameter_is_parsed():
    config = parse_stream_config(
        {
            "sample_rate": "44100",
            "encoding": "pcm_f32le",
            "channels": "2",
            "language": "de",
            "task": "translate",
            "prompt": "Grafana",
            "interim_results": "false",
            "word_timestamps": "1",
            "endpointing_ms": "800",
        },
        DEFAULTS,
        multilingual=True,
    )
    assert (config.sample_rate, config.encoding, config.channels, config.language, config.task) == (
        44100,
        "pcm_f32le",
        2,
        "de",
        "translate",
    )
    assert (config.prompt, config.interim_results, config.word_timestamps, config.endpointing_ms) == (
        "Grafana",
        False,
        True,
        800,
    )


def test_english_only_model_refuses_other_languages_and_translation():
    with pytest.raises(InvalidParameter, match="English-only"):
        parse_stream_config({"language": "fr"}, DEFAULTS, multilingual=False)
    with pytest.raises(InvalidParameter, match="translate"):
        parse_stream_config({"task": "translate"}, DEFAULTS, multilingual=False)
    assert parse_stream_config({"language": "en"}, DEFAULTS, multilingual=False).language == "en"


@pytest.mark.parametrize("params", [{"sample_rate": "x"}, {"channels": "9"}, {"nope": "1"}, {"encoding": "opus"}])
def test_bad_parameters_name_the_parameter(params):
    with pytest.raises(InvalidParameter) as info:
        parse_stream_config(params, DEFAULTS, multilingual=True)
    assert info.value.param == next(iter(params))


def test_events_render_as_protocol_messages():
    final = Final(1, 3, 0.12345, 2.5, "hi there", "en", (Word(" hi", 0.1, 0.3, 0.9),))
    assert event_message(final, "en") == {
        "type": "final",
        "utterance_id": 3,
        "channel": 1,
        "start": 0.123,
        "end": 2.5,
        "text": "hi there",
        "language": "en",
        "words": [{"word": "hi", "start": 0.1, "end": 0.3, "probability": 0.9}],
    }
    partial = event_message(Partial(0, 0, 0.0, 1.0, "hi", "hi"), "en")
    assert partial["type"] == "partial" and partial["stable_text"] == "hi"
    assert "words" not in event_message(Final(0, 0, 0, 1, "x", "", None), "en")


def test_the_last_of_repeated_values_wins_and_absent_ones_keep_the_defaults():
    params = parse_params({"channels": ["1", "2"]}, DEFAULTS, multilingual=False)
    assert params.channels == 2 and params.endpointing_ms == 500 and params.interim_results
