"""Opening a modal with the trigger_id of an interaction, which Slack honours once and for 3 seconds.

views.open is the one Slack call a listener makes before its ack, and the first thing it does: nothing reads the
database or asks Slack anything before it. It runs on a small pool of its own, so a background pool busy with
slow Slack calls never makes it miss the 3 seconds, and the listener waits for it at most OPEN_WAIT_SECONDS, so
its ack is in time even when Slack is slow. What Slack answers after that goes to `late`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from bot.context import Context
from bot.jobs import TrackingExecutor
from bot.ports import MessengerError

log = logging.getLogger(__name__)

OPEN_WAIT_SECONDS = 2.0  # of Slack's 3 s for the ack, what views.open may take
OPENERS = 4


class _ModalOpener:
    def __init__(self, ctx: Context) -> None:
        self.executor = TrackingExecutor(OPENERS, "incident-bot-views")
        ctx.jobs.watched.append(self.executor)  # waited for and shut down with the background jobs


@dataclass(frozen=True)
class Opening:
    """`opened`, `failed` (Slack refused: `reason`) or `slow` (no answer within OPEN_WAIT_SECONDS)."""

    outcome: str
    reason: str = ""

    @property
    def opened(self) -> bool:
        return self.outcome == "opened"


def open_at_once(ctx: Context, trigger_id: str | None, view: dict[str, Any], *,
                 late: Callable[[MessengerError], None] | None = None) -> Opening:
    """Opens `view` for the person whose interaction gave `trigger_id`. A failure Slack reports after the wait
    goes to `late` (logged when there is nobody to tell)."""
    if not trigger_id:
        return Opening("failed", "no_trigger_id")
    opener = ctx.shared(_ModalOpener, lambda: _ModalOpener(ctx))
    future: Future[str] = opener.executor.submit(ctx.messenger.open_view, trigger_id, view)
    try:
        future.result(timeout=OPEN_WAIT_SECONDS)
    except MessengerError as error:
        log.warning("views.open refused: %s", error.kind)
        return Opening("failed", error.kind)
    except TimeoutError:
        future.add_done_callback(lambda done: _report_late(done, late))
        return Opening("slow")
    except Exception:
        log.exception("views.open failed")
        return Opening("failed", "error")
    return Opening("opened")


def _report_late(done: Future[str], late: Callable[[MessengerError], None] | None) -> None:
    error = done.exception()
    if not isinstance(error, MessengerError):
        return
    log.warning("views.open refused after the ack: %s", error.kind)
    if late is not None:
        try:
            late(error)
        except Exception:
            log.exception("could not tell the person that the modal did not open")
