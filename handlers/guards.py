"""Request guards that run after Bolt's signature check: the workspace and the payload's shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse

from bot.context import Context


def request_team(body: dict[str, Any]) -> str | None:
    """Slash commands and events carry `team_id`; interactivity payloads carry `team.id`."""
    if isinstance(body.get("team_id"), str):
        return str(body["team_id"])
    team = body.get("team")
    if isinstance(team, dict) and isinstance(team.get("id"), str):
        return str(team["id"])
    return None


def well_formed(body: dict[str, Any]) -> bool:
    if body.get("command"):
        return isinstance(body.get("text", ""), str) and bool(body.get("user_id")) and bool(body.get("channel_id"))
    if body.get("type") == "event_callback":
        return isinstance(body.get("event"), dict) and isinstance(body["event"].get("type"), str)
    return body.get("type") in ("block_actions", "view_submission", "view_closed", "url_verification",
                                "shortcut", "message_action", "block_suggestion")


def register(app: App, ctx: Context) -> None:
    team_id = ctx.settings.slack_team_id

    @app.middleware
    def guard(req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]) -> BoltResponse:
        body = req.body if isinstance(req.body, dict) else {}
        if not well_formed(body):
            return BoltResponse(status=400, body="malformed payload")
        if team_id and body.get("type") != "url_verification" and request_team(body) != team_id:
            return BoltResponse(status=403, body="wrong workspace")
        return next()
