"""Stable prefix of successive partials (LocalAgreement-2)."""

from __future__ import annotations

from stream_server.session.agreement import StablePrefix


def test_stable_prefix_needs_two_agreeing_hypotheses_and_never_shrinks():
    agreement = StablePrefix()
    assert agreement.update("the cat") == ("", "the cat")
    assert agreement.update("the cat sat") == ("the cat", "the cat sat")
    assert agreement.update("the cat sat on") == ("the cat sat", "the cat sat on")
    # a hypothesis that rewrites stable words cannot retract them
    assert agreement.update("a hat sat on the mat") == ("the cat sat", "the cat sat on the mat")
    assert agreement.update("a hat sat on the mat") == ("the cat sat", "the cat sat on the mat")


def test_stable_prefix_ignores_case_and_punctuation_when_comparing():
    agreement = StablePrefix()
    agreement.update("Hello, world")
    stable, shown = agreement.update("hello world again")
    assert stable == "hello world"
    assert shown == "hello world again"
