"""`app_home_opened`: publish the viewer's App Home (bot/home.py), after the ack.

The listener stores nothing and calls no Slack method: it only decides whether this open needs a publish (the
Home tab, not the Messages tab; not within bot.home.DEBOUNCE of the last one for this person) and hands the work
to ctx.jobs, which starts once the response is written. The event's view `hash` goes with the publish, so a
publish racing another instance's newer one is refused (hash_conflict) instead of overwriting it.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltContext
from sqlalchemy.exc import SQLAlchemyError

from bot import home
from bot.context import Context
from bot.ports import MessengerError
from handlers.blocks import home as home_blocks
from handlers.guards import ACK_WRITTEN

log = logging.getLogger(__name__)


def register(app: App, ctx: Context) -> None:
    @app.event("app_home_opened")
    def on_app_home_opened(event: dict[str, Any], context: BoltContext) -> None:
        user = event.get("user")
        if event.get("tab") != "home" or not isinstance(user, str) or not user:
            return
        if not home.refreshes(ctx).claim(user, ctx.clock.now()):
            return  # published moments ago
        view = event.get("view")
        shown_hash = view.get("hash") if isinstance(view, dict) else None
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            ctx.jobs.submit(publish, ctx, user, shown_hash if isinstance(shown_hash, str) else None)


def publish(ctx: Context, user_id: str, shown_hash: str | None = None) -> None:
    """Builds and publishes `user_id`'s home. A failure is logged and forgotten: the next open publishes again."""
    try:
        data = home.build(ctx, user_id)
        ctx.messenger.publish_home(user_id, home_blocks.home_view(home.view(ctx, data)), hash=shown_hash)
    except MessengerError as error:
        home.refreshes(ctx).release(user_id)
        if error.kind == "hash_conflict":
            log.info("home of %s changed since it was opened; the newer one stays", user_id)
        else:
            log.warning("could not publish the home of %s: %s", user_id, error.kind)
    except SQLAlchemyError:
        home.refreshes(ctx).release(user_id)
        log.warning("could not read the home of %s: database unavailable", user_id)
