"""``ConnectionLimits.check(now)``: every deadline of a connection decided without a clock or a socket."""

from __future__ import annotations

import dataclasses

import pytest

from stream_server.config import Settings
from stream_server.transport.limits import INTAKE_BURST_S, ConnectionLimits, LimitAction, StreamLimits

LIMITS = StreamLimits(
    max_message_bytes=1000, max_session_s=100.0, idle_timeout_s=10.0, max_backlog_s=4.0, max_queued_events=50
)


def test_limits_come_from_the_settings() -> None:
    limits = StreamLimits.from_settings(Settings(idle_timeout_s=7, max_backlog_s=2, max_message_bytes=10))
    assert (limits.idle_timeout_s, limits.max_backlog_s, limits.max_message_bytes) == (7, 2, 10)
    assert limits.max_text_chars == 10


def test_idle_is_due_after_idle_timeout_without_a_frame() -> None:
    limits = ConnectionLimits(LIMITS, now=1000.0)
    assert limits.check(1009.9) is LimitAction.NONE
    assert limits.next_check() == 1010.0
    limits.activity(1005.0)
    assert limits.check(1014.9) is LimitAction.NONE
    assert limits.check(1015.0) is LimitAction.IDLE


def test_max_duration_is_due_however_active_the_client() -> None:
    limits = ConnectionLimits(LIMITS, now=0.0)
    for t in range(0, 100, 5):
        limits.activity(float(t))
        assert limits.check(float(t)) is LimitAction.NONE
    limits.activity(99.0)
    assert limits.next_check() == 100.0
    assert limits.check(100.0) is LimitAction.MAX_DURATION


def test_a_close_waits_closing_timeout_for_its_finals_then_gives_up() -> None:
    limits = ConnectionLimits(LIMITS, now=0.0)
    assert limits.begin_closing(50.0) and not limits.begin_closing(51.0)
    assert limits.check(60.0) is LimitAction.NONE  # idle no longer applies while closing
    assert limits.check(50.0 + LIMITS.closing_timeout_s - 0.1) is LimitAction.NONE
    assert limits.next_check() == 50.0 + LIMITS.closing_timeout_s
    assert limits.check(50.0 + LIMITS.closing_timeout_s) is LimitAction.GIVE_UP


def test_paused_intake_resumes_at_half_the_backlog_and_is_not_idle() -> None:
    limits = ConnectionLimits(LIMITS, now=0.0)
    assert not limits.over_backlog(4.0) and limits.over_backlog(4.1)
    limits.pause()
    assert limits.check(30.0, backlog_s=3.0) is LimitAction.NONE  # paused 30 s > idle timeout: not idle
    assert limits.next_check() == 100.0  # nothing but the session's end is due while paused
    assert limits.check(31.0, backlog_s=2.0) is LimitAction.RESUME
    assert not limits.paused and limits.last_activity == 31.0
    assert limits.check(40.0) is LimitAction.NONE


def test_a_pause_ends_at_the_session_maximum_which_then_ends_the_session() -> None:
    limits = ConnectionLimits(LIMITS, now=0.0)
    limits.pause()
    assert limits.check(100.0, backlog_s=4.0) is LimitAction.RESUME
    assert limits.check(100.0, backlog_s=4.0) is LimitAction.MAX_DURATION


def test_a_close_lifts_a_pause() -> None:
    limits = ConnectionLimits(LIMITS, now=0.0)
    limits.pause()
    limits.begin_closing(5.0)
    assert limits.check(6.0, backlog_s=4.0) is LimitAction.RESUME


def test_audio_faster_than_the_intake_speed_pauses_reading_until_the_bucket_refills() -> None:
    limits = ConnectionLimits(dataclasses.replace(LIMITS, max_intake_speed=2.0), now=0.0)
    limits.audio_rate(channels=8, sample_rate=48000)  # real time: 384,000 samples/s over the connection
    limits.took_audio(0.0, INTAKE_BURST_S)  # the first 10 s at once
    assert not limits.paused
    limits.took_audio(0.0, 2.0)  # 2 s more of all 8 channels: a second at twice real time
    assert limits.paused and limits.throttled_until == pytest.approx(1.0)
    assert limits.next_check() == pytest.approx(1.0)
    assert limits.check(0.9) is LimitAction.NONE and limits.paused
    assert limits.check(1.0) is LimitAction.RESUME and not limits.paused
    limits.took_audio(2.0, 2.0)  # at the speed itself: the bucket keeps up
    assert not limits.paused


def test_the_intake_speed_counts_the_whole_connection_and_no_limit_is_0() -> None:
    heavy = ConnectionLimits(dataclasses.replace(LIMITS, max_intake_speed=2.0), now=0.0)
    heavy.audio_rate(channels=8, sample_rate=48000)
    heavy.took_audio(0.0, INTAKE_BURST_S + 4.0)
    assert heavy.throttled_until == pytest.approx(2.0)  # 4 s of its audio past the burst, at 2 x real time
    unlimited = ConnectionLimits(LIMITS, now=0.0)
    unlimited.audio_rate(channels=8, sample_rate=48000)
    unlimited.took_audio(0.0, 1000.0)
    assert not unlimited.paused


def test_a_throttled_connection_is_not_idle_and_its_backlog_pause_outlasts_the_throttle() -> None:
    limits = ConnectionLimits(dataclasses.replace(LIMITS, max_intake_speed=1.0), now=0.0)
    limits.audio_rate(channels=1, sample_rate=16000)
    limits.took_audio(0.0, INTAKE_BURST_S + 20.0)  # throttled for 20 s, past the 10 s idle timeout
    assert limits.check(15.0) is LimitAction.NONE
    limits.pause()  # the backlog is full too
    assert limits.check(20.0, backlog_s=4.0) is LimitAction.NONE and limits.paused
    assert limits.check(21.0, backlog_s=1.0) is LimitAction.RESUME
