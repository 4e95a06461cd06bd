"""An utterance's states: the moves its rules allow, and a named error for the rest."""

from __future__ import annotations

import pytest

from stream_server.session.utterance import IllegalTransition, Utterance, UtteranceState


def test_an_illegal_utterance_transition_raises_a_named_error():
    utt = Utterance(0, 0, 0)
    with pytest.raises(IllegalTransition):
        utt.move(UtteranceState.DONE)
    utt.move(UtteranceState.ENDED)
    with pytest.raises(IllegalTransition):
        utt.move(UtteranceState.DISCARDED)


def test_an_utterance_goes_open_ended_finalizing_done():
    utt = Utterance(0, 0, 0)
    for state in (UtteranceState.ENDED, UtteranceState.FINALIZING, UtteranceState.DONE):
        utt.move(state)
        assert utt.state is state
    with pytest.raises(IllegalTransition, match="done -> open"):
        utt.move(UtteranceState.OPEN)
