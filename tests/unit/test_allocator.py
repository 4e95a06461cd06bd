"""``allocator.trim_when_idle``: trims once after activity, only when idle, never while busy."""

from __future__ import annotations

import asyncio

from stream_server.allocator import trim_when_idle


def test_trims_once_after_activity_and_only_when_idle() -> None:
    state = {"idle": True, "opened": 0}
    trims: list[tuple[bool, int]] = []

    def trim() -> bool:
        trims.append((bool(state["idle"]), state["opened"]))
        return True

    async def until(expected: list[tuple[bool, int]]) -> None:
        # each trim follows a whole-process gc.collect(), which can take a while late in a long test session
        for _ in range(500):
            if trims == expected:
                return
            await asyncio.sleep(0.01)
        assert trims == expected

    async def scenario() -> None:
        task = asyncio.create_task(
            trim_when_idle(lambda: bool(state["idle"]), lambda: state["opened"], interval_s=0.01, trim=trim)
        )
        await asyncio.sleep(0.3)  # 30 checks
        assert trims == []  # idle from the start, nothing happened: nothing to give back
        state.update(idle=False, opened=1)
        await asyncio.sleep(0.3)  # 30 checks
        assert trims == []  # never while a stream is open
        state["idle"] = True
        await until([(True, 1)])  # once, at rest
        await asyncio.sleep(0.3)  # 30 checks more
        assert trims == [(True, 1)]  # and only once
        state["opened"] = 2  # a short session opened and ended between two checks
        await until([(True, 1), (True, 2)])
        task.cancel()

    asyncio.run(scenario())
