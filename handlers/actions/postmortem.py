"""Buttons and checkboxes of the postmortem domain (action ids start with `postmortem.`).

- `postmortem.action.start|done|reopen` (value = action item id): set the item's status, then chat.update the
  clicked message.
- `postmortem.checklist.<group>` (block id `pm-checklist:<incident id>:<group>`): tick or untick checklist items.
  Only what this click changed is applied (the selection Slack sends minus the one the message showed), so two
  people ticking different items at the same moment never undo each other.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot import checklist, postmortem
from bot.context import Context
from bot.ports import MessengerError
from handlers.guards import ACK_WRITTEN
from handlers.replays import once
from storage.models import ActionItem, Incident

log = logging.getLogger(__name__)

ACTION_RE = re.compile(r"^postmortem\.action\.(start|done|reopen)$")
CHECKLIST_RE = re.compile(r"^postmortem\.checklist\.[a-z_]+$")
CHECKLIST_BLOCK_RE = re.compile(r"^pm-checklist:(\d{1,12}):([a-z_]+)$")


def _container(body: dict[str, Any]) -> tuple[str | None, str | None]:
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return channel, container.get("message_ts")


def on_action_button(ctx: Context, body: dict[str, Any]) -> None:
    action = (body.get("actions") or [{}])[0]
    match = ACTION_RE.match(str(action.get("action_id", "")))
    value = str(action.get("value", ""))
    if not match or not value.isdigit():
        return
    status = postmortem.TRANSITIONS[match.group(1)]
    user = (body.get("user") or {}).get("id")
    with ctx.db.session() as session:
        item = session.get(ActionItem, int(value))
        if item is None:
            return
        changed = postmortem.set_action_status(ctx, session, item, status)
    channel, ts = _container(body)
    if channel and ts:
        ctx.jobs.submit(_refresh_item, ctx, int(value), channel, ts, user if changed else None)


def _refresh_item(ctx: Context, item_id: int, channel: str, ts: str, user: str | None) -> None:
    try:
        postmortem.refresh_action_item(ctx, item_id, channel, ts, changed_by=user)
    except MessengerError as error:
        # The status is stored; the message catches up on the next click.
        log.warning("action item message update failed: %s", error.kind)


def _shown_options(body: dict[str, Any], block_id: str, action_id: str) -> set[str] | None:
    """The options the clicked message showed as ticked, from the message Slack sends back with the click."""
    for block in (body.get("message") or {}).get("blocks") or []:
        if not isinstance(block, dict) or block.get("block_id") != block_id:
            continue
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return {str(o.get("value")) for o in element.get("initial_options") or [] if isinstance(o, dict)}
    return None


def on_checklist(ctx: Context, body: dict[str, Any]) -> None:
    action = (body.get("actions") or [{}])[0]
    block = CHECKLIST_BLOCK_RE.match(str(action.get("block_id", "")))
    if not block:
        return
    incident_id, group = int(block.group(1)), block.group(2)
    group_keys = {key for key in checklist.ALL_KEYS if key.startswith(f"{group}.")}
    selected = {str(o.get("value")) for o in action.get("selected_options") or [] if isinstance(o, dict)}
    selected &= group_keys
    shown = _shown_options(body, str(action.get("block_id")), str(action.get("action_id")))
    if shown is None:  # no message in the payload: take the selection as the whole truth for this group
        changes = {key: key in selected for key in group_keys}
    else:
        changes = {key: key in selected for key in (selected ^ shown) & group_keys}
    user = (body.get("user") or {}).get("id")
    with ctx.db.session() as session:
        if session.get(Incident, incident_id) is None:
            return
        postmortem.set_checklist(ctx, session, incident_id, changes, user)
    channel, ts = _container(body)
    if channel and ts:
        ctx.jobs.submit(_refresh_checklist, ctx, incident_id, channel, ts)


def _refresh_checklist(ctx: Context, incident_id: int, channel: str, ts: str) -> None:
    try:
        postmortem.refresh_checklist(ctx, incident_id, channel, ts)
    except MessengerError as error:
        log.warning("checklist message update failed: %s", error.kind)


def register(app: App, ctx: Context) -> None:
    @app.action(ACTION_RE)
    @once(ctx)
    def action_button(ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        # Stored before the ack: if the database fails, Slack shows the clicker an error instead of silence.
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            on_action_button(ctx, body)
        ack()

    @app.action(CHECKLIST_RE)
    @once(ctx)
    def checklist_box(ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            on_checklist(ctx, body)
        ack()
