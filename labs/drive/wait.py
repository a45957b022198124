"""The one way the kit waits for something: poll a condition until it holds, give up after a timeout or as soon as
waiting can no longer help, and say what was waited for. Built on tenacity, which the scripts already use."""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

import tenacity

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 20, what: str = "a condition", *,
               interval: float = 0.1, ignoring: tuple[type[BaseException], ...] = (),
               give_up: Optional[Callable[[], Optional[str]]] = None, or_last: bool = False) -> Optional[T]:
    """Call `condition` every `interval` seconds until it returns something true, and return that.

    `ignoring`: exceptions that mean "not yet" (a broker still booting refuses connections). `give_up`: returns a
    reason when waiting longer is pointless (the process that should answer has exited); the wait then ends at once
    with that reason. Raises TimeoutError naming `what` (and the last ignored error) after `timeout` seconds, or,
    with `or_last`, returns the condition's last value (None if it last raised): for a wait whose end is not a
    failure of its own (a lab's claim then says what is missing, statistics are shown as they last were).
    """
    reason: list[str] = []

    def hopeless(_state: tenacity.RetryCallState) -> bool:
        found = give_up() if give_up is not None else None
        if found:
            reason.append(found)
        return bool(found)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout) | hopeless, wait=tenacity.wait_fixed(interval),
        retry=tenacity.retry_if_result(lambda result: not result) | tenacity.retry_if_exception_type(ignoring))
    try:
        return retrying(condition)
    except tenacity.RetryError as exc:
        last = exc.last_attempt
        if or_last:
            return None if last.failed else last.result()
        detail = f" (last: {last.exception()!r})" if last.failed else ""
        if reason:
            raise TimeoutError(f"gave up waiting for {what}: {reason[0]}{detail}") from None
        raise TimeoutError(f"waited {timeout:g}s for {what}{detail}") from None
