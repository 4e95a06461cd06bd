"""``Outbox``: a slow reader gets the newest partial of an utterance, every other message in order."""

from __future__ import annotations

import asyncio

from stream_server.transport.outbox import Outbox


def test_a_newer_partial_replaces_the_queued_one_in_place() -> None:
    async def scenario() -> list[dict[str, object]]:
        counted: list[int] = []
        outbox = Outbox(lambda: counted.append(1))
        outbox.put({"type": "partial", "text": "a"}, ("u", 0))
        outbox.put({"type": "final", "text": "x"})
        outbox.put({"type": "partial", "text": "ab"}, ("u", 0))
        outbox.put({"type": "partial", "text": "other"}, ("u", 1))
        assert len(outbox) == 3 and outbox.coalesced == 1 and counted == [1]
        return [await outbox.get() for _ in range(3)]

    got = asyncio.run(scenario())
    assert [m["text"] for m in got] == ["ab", "x", "other"]


def test_drained_waits_for_the_message_being_written() -> None:
    async def scenario() -> None:
        outbox = Outbox()
        await asyncio.wait_for(outbox.wait_drained(), 1)  # empty: drained at once
        outbox.put({"type": "final"})
        message = await outbox.get()
        waiter = asyncio.ensure_future(outbox.wait_drained())
        await asyncio.sleep(0)
        assert not waiter.done() and message["type"] == "final"  # taken but not yet written
        outbox.sent()
        await asyncio.wait_for(waiter, 1)

    asyncio.run(scenario())


def test_get_waits_for_a_message() -> None:
    async def scenario() -> dict[str, object]:
        outbox = Outbox()
        getter = asyncio.ensure_future(outbox.get())
        await asyncio.sleep(0)
        assert not getter.done()
        outbox.put({"type": "final"})
        return await asyncio.wait_for(getter, 1)

    assert asyncio.run(scenario()) == {"type": "final"}
