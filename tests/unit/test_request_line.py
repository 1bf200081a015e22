"""One log line per HTTP request: what a turn reports rides on its request's line."""

from __future__ import annotations

import asyncio
from typing import Any

from mvm_chat.logging import end_request_line, report, start_request_line


class Lines:
    """A logger that keeps what it is asked to write."""

    def __init__(self) -> None:
        self.written: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.written.append((event, fields))


async def test_reports_ride_on_the_line_until_it_is_written() -> None:
    logger = Lines()

    async def request() -> dict[str, Any]:
        line = start_request_line(request_id="r1")
        report(logger, "turn.complete", model="small")

        async def streamed_part() -> None:  # a streamed reply runs in a task of its own
            report(logger, "turn.complete", completion_tokens=9)

        await asyncio.create_task(streamed_part())
        fields = end_request_line(line)
        report(logger, "turn.complete", late=True)  # after the line: a line of its own
        return fields

    fields = await asyncio.create_task(request())
    assert fields == {"model": "small", "completion_tokens": 9}
    assert logger.written == [("turn.complete", {"late": True})]


async def test_outside_a_request_a_report_is_a_line_of_its_own() -> None:
    logger = Lines()

    async def websocket_turn() -> None:
        report(logger, "turn.complete", model="small")

    await asyncio.create_task(websocket_turn())
    assert logger.written == [("turn.complete", {"model": "small"})]


async def test_requests_do_not_share_a_line() -> None:
    logger = Lines()

    async def request(name: str) -> dict[str, Any]:
        line = start_request_line(request_id=name)
        report(logger, "turn.complete", name=name)
        await asyncio.sleep(0)
        return end_request_line(line)

    first, second = await asyncio.gather(request("a"), request("b"))
    assert (first, second) == ({"name": "a"}, {"name": "b"})
    assert logger.written == []
