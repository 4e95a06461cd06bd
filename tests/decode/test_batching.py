"""``batching``: encoder windows, prompt cuts and which items share a model call. Pure, no model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stream_server.config import Settings
from stream_server.decode.batching import MAX_PREVIOUS_TOKENS, PROMPT_BUCKETS, cut_prompt, group
from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind

WINDOW = Settings().window_policy()  # at least 4 s, audio + 1 s, in 2 s steps


def seconds(s: float, **options: object) -> DecodeJob:
    return DecodeJob("a", JobKind.FINAL, np.zeros(int(s * 16000), np.float32), DecodeOptions(**options))  # type: ignore[arg-type]


def test_a_window_is_the_audio_and_its_margin_rounded_up() -> None:
    assert [WINDOW.frames_for(int(s * 16000)) for s in (0.5, 3.0, 3.5, 9.0, 40.0)] == [400, 400, 600, 1000, 3000]
    assert replace(WINDOW, full_window=True).frames_for(16000) == 3000
    assert WINDOW.cost_s(seconds(2.0)) == 3.0 and replace(WINDOW, margin_s=2.0).cost_s(seconds(2.0)) == 4.0


def test_a_prompt_keeps_the_users_words_and_the_newest_rolling_text_on_a_bucket() -> None:
    initial, previous = [1, 2, 3], list(range(100, 150))
    cut = cut_prompt(initial, previous)
    assert cut[:3] == initial and len(cut) - 3 in PROMPT_BUCKETS and cut[-1] == 149
    assert len(cut) == 3 + 32
    assert len(cut_prompt(list(range(400)), previous)) == MAX_PREVIOUS_TOKENS  # the user's prompt, capped


def test_a_user_prompt_over_whispers_limit_keeps_its_last_tokens_nearest_the_audio() -> None:
    """As Whisper does (``prompt_tokens[-(max_length // 2 - 1):]``): the end of a long prompt is what the
    audio continues, so its start is what goes."""
    long = list(range(400))
    assert cut_prompt(long, []) == long[-MAX_PREVIOUS_TOKENS:]
    assert cut_prompt(long, list(range(1000, 1050))) == long[-MAX_PREVIOUS_TOKENS:]  # no room for rolling text
    near = list(range(MAX_PREVIOUS_TOKENS - 10))  # room for 10 rolling tokens: the newest 8 (a bucket)
    assert cut_prompt(near, list(range(1000, 1050))) == near + list(range(1042, 1050))


def test_items_of_different_languages_and_tasks_share_a_call_when_their_geometry_matches() -> None:
    jobs = [
        seconds(2.0, language="de"),
        seconds(2.5, language="fr", task="translate"),
        seconds(2.0, languages=("es", "it")),
        seconds(9.0, language="de"),  # another window
        seconds(2.0, language="de", beam_size=5),  # generated differently
    ]
    groups = group(jobs, WINDOW, lambda job: [])
    assert [[j.job_id for j, _ in g] for g in groups] == [
        [j.job_id for j in jobs[:3]],
        [jobs[3].job_id],
        [jobs[4].job_id],
    ]
    by_prompt = group(jobs[:2], WINDOW, lambda job: [0] * (8 if job.options.language == "de" else 16))
    assert len(by_prompt) == 2  # prompt lengths differ: <|startoftranscript|> must sit at one position
