"""Buttons and checkboxes of the postmortem domain; their ids are built and parsed in handlers/blocks/postmortem.py.

- An action item's buttons set the item's status, then chat.update the clicked message.
- A checklist's checkboxes tick or untick checklist items; only what this click changed is applied
  (bot.checklist.click_changes).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot import checklist, postmortem
from bot.context import Context
from bot.ports import MessengerError
from handlers.blocks import postmortem as blocks
from handlers.guards import ACK_WRITTEN
from handlers.replays import once
from storage.models import ActionItem, Incident

log = logging.getLogger(__name__)


def _container(body: dict[str, Any]) -> tuple[str | None, str | None]:
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return channel, container.get("message_ts")


def on_action_button(ctx: Context, body: dict[str, Any]) -> None:
    click = blocks.parse_action_item_click((body.get("actions") or [{}])[0])
    if click is None:
        return
    status = postmortem.TRANSITIONS[click.transition]
    user = (body.get("user") or {}).get("id")
    with ctx.db.session() as session:
        item = session.get(ActionItem, click.item_id)
        if item is None:
            return
        changed = postmortem.set_action_status(ctx, session, item, status)
    channel, ts = _container(body)
    if channel and ts:
        ctx.jobs.submit(_refresh_item, ctx, click.item_id, channel, ts, user if changed else None)


def _refresh_item(ctx: Context, item_id: int, channel: str, ts: str, user: str | None) -> None:
    try:
        postmortem.refresh_action_item(ctx, item_id, channel, ts, changed_by=user)
    except MessengerError as error:
        # The status is stored; the message catches up on the next click.
        log.warning("action item message update failed: %s", error.kind)


def on_checklist(ctx: Context, body: dict[str, Any]) -> None:
    click = blocks.parse_checklist_click(body)
    if click is None:
        return
    changes = checklist.click_changes(click.group, click.selected, click.shown)
    user = (body.get("user") or {}).get("id")
    with ctx.db.session() as session:
        if session.get(Incident, click.incident_id) is None:
            return
        postmortem.set_checklist(ctx, session, click.incident_id, changes, user)
    channel, ts = _container(body)
    if channel and ts:
        ctx.jobs.submit(_refresh_checklist, ctx, click.incident_id, channel, ts)


def _refresh_checklist(ctx: Context, incident_id: int, channel: str, ts: str) -> None:
    try:
        postmortem.refresh_checklist(ctx, incident_id, channel, ts)
    except MessengerError as error:
        log.warning("checklist message update failed: %s", error.kind)


def register(app: App, ctx: Context) -> None:
    @app.action(blocks.ACTION_ITEM_ACTIONS)
    @once(ctx)
    def action_button(ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        # Stored before the ack: if the database fails, Slack shows the clicker an error instead of silence.
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            on_action_button(ctx, body)
        ack()

    @app.action(blocks.CHECKLIST_ACTIONS)
    @once(ctx)
    def checklist_box(ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            on_checklist(ctx, body)
        ack()
