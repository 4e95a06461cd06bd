"""``validate_params``: the one check of a stream's parameters, whatever dialect asked."""

from __future__ import annotations

import pytest

from stream_server.errors import InvalidParameter
from stream_server.session.params import validate_params
from tests.session.support import params


@pytest.mark.parametrize(
    "fields",
    [
        dict(sample_rate=4000),
        dict(sample_rate=96000),
        dict(channels=0),
        dict(channels=9),
        dict(task="dance"),
        dict(endpointing_ms=5),
        dict(endpointing_ms=20000),
        dict(language="english"),
        dict(language="e1"),
        dict(languages=("en", "français")),
        dict(encoding="opus"),
    ],
)
def test_invalid_parameters_are_refused_by_name(fields):
    with pytest.raises(InvalidParameter) as info:
        validate_params(params(**fields), multilingual=True)
    assert info.value.param == next(iter(fields))


def test_language_codes_are_case_insensitive_and_come_back_lower_case():
    checked = validate_params(params(language="DE", languages=("Fr", "deu")), multilingual=True)
    assert (checked.language, checked.languages) == ("de", ("fr", "deu"))
    assert validate_params(params(language="EN"), multilingual=False).language == "en"


def test_an_english_only_model_refuses_other_languages_and_translation():
    with pytest.raises(InvalidParameter, match="English-only") as info:
        validate_params(params(language="fr"), multilingual=False)
    assert info.value.param == "language"
    with pytest.raises(InvalidParameter) as info:
        validate_params(params(languages=("en", "fr")), multilingual=False)
    assert info.value.param == "languages"
    with pytest.raises(InvalidParameter, match="translate") as info:
        validate_params(params(task="translate"), multilingual=False)
    assert info.value.param == "task"


def test_endpointing_none_and_the_server_defaults_pass():
    assert validate_params(params(endpointing_ms=None), multilingual=False).endpointing_ms is None
    assert validate_params(params(), multilingual=False) == params()
