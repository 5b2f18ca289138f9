"""The Slack sandbox's App Home: `views.publish` (each user's Home tab) and `conversations.open` (the direct message
between the bot and a user, where the Messages tab shows what the bot sends).

Both follow Slack's documentation (docs.slack.dev, api.slack.com/methods):
- views.publish takes `user_id` (required) and a `view` of type `home`; a bad or unknown `user_id` is
  `invalid_arguments` with "invalid `user_id`" in `response_metadata.messages`, as the method's page shows. A view
  that is not a home view, or holds more than 100 blocks, is `invalid_arguments` too; one over 250 kB is
  `view_too_large`; with the Home tab off, `not_enabled`. The optional `hash` must match the hash of the view now
  published for that user, else `hash_conflict` (without a published view there is nothing to conflict with).
  The answer carries the published view with a fresh `hash`; a user keeps one view id.
- conversations.open with `users` = one user opens (or resumes) the 1:1 DM with the bot and answers its channel
  (`already_open` when it existed); with `channel` it resumes that DM. Neither is `users_list_not_supplied`; an
  unknown user is `user_not_found`, an unknown DM `channel_not_found`. Group DMs (several users) are not modelled:
  `method_not_supported_for_channel_type`.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

JSONDict = dict[str, Any]

HOME_BLOCKS = 100
VIEW_BYTES = 250_000
SECTION_TEXT = 3000
HEADER_TEXT = 150


def _refused(error: str, *messages: str) -> JSONDict:
    answer: JSONDict = {"ok": False, "error": error}
    if messages:
        answer["response_metadata"] = {"messages": list(messages)}
    return answer


def _block_problem(block: Any, index: int) -> str | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return f"[ERROR] missing required field: type [json-pointer:/view/blocks/{index}]"
    text = block.get("text")
    limit = {"section": SECTION_TEXT, "header": HEADER_TEXT}.get(block["type"])
    if limit is not None and isinstance(text, dict) and len(str(text.get("text") or "")) > limit:
        return f"[ERROR] must be less than {limit + 1} characters [json-pointer:/view/blocks/{index}/text/text]"
    return None


class AppHomes:
    """Each user's published Home tab and DM channel, behind the sandbox's lock."""

    def __init__(self, *, lock: threading.RLock, team_id: str, app_id: str, bot_id: str,
                 user_known: Callable[[str], bool], new_id: Callable[[str], str]) -> None:
        self._lock = lock
        self._team_id, self._app_id, self._bot_id = team_id, app_id, bot_id
        self._user_known = user_known
        self._new_id = new_id
        self._homes: dict[str, JSONDict] = {}
        self._dms: dict[str, str] = {}
        self._hashes = itertools.count(1)
        self.home_tab_enabled = True

    def methods(self) -> dict[str, Callable[[JSONDict], JSONDict]]:
        return {"views.publish": self._publish, "conversations.open": self._open}

    # ---- what tests look at

    def home(self, user_id: str) -> JSONDict | None:
        """The Home tab `user_id` sees now (the last view published for them)."""
        with self._lock:
            found = self._homes.get(user_id)
            return copy.deepcopy(found) if found is not None else None

    def dm_channel(self, user_id: str) -> str:
        """The ID of the direct message between the bot and `user_id` (made on first use, as Slack does)."""
        with self._lock:
            return self._dms.setdefault(user_id, f"D{user_id[1:]}" if user_id[:1] in "UW" else f"D{user_id}")

    # ---- the methods

    def _publish(self, p: JSONDict) -> JSONDict:
        user = p.get("user_id")
        if not isinstance(user, str) or not user or not self._user_known(user):
            return _refused("invalid_arguments", "invalid `user_id`")
        view = p.get("view")
        if not isinstance(view, dict):
            return _refused("invalid_arguments", "[ERROR] missing required field: view [json-pointer:/view]")
        if view.get("type") != "home":
            return _refused("invalid_arguments", "[ERROR] must be home [json-pointer:/view/type]")
        blocks = view.get("blocks")
        if not isinstance(blocks, list):
            return _refused("invalid_arguments", "[ERROR] missing required field: blocks [json-pointer:/view/blocks]")
        if len(blocks) > HOME_BLOCKS:
            return _refused("invalid_arguments",
                            f"[ERROR] must be less than {HOME_BLOCKS + 1} items [json-pointer:/view/blocks]")
        problems = [found for index, block in enumerate(blocks) if (found := _block_problem(block, index))]
        if problems:
            return _refused("invalid_arguments", *problems)
        if len(json.dumps(view).encode()) > VIEW_BYTES:
            return _refused("view_too_large")
        if not self.home_tab_enabled:
            return _refused("not_enabled")
        with self._lock:
            current = self._homes.get(user)
            wanted = p.get("hash")
            if wanted and current is not None and wanted != current["hash"]:
                return _refused("hash_conflict")
            view_id = current["id"] if current is not None else self._new_id("V")
            stored: JSONDict = {
                "id": view_id, "team_id": self._team_id, "type": "home", "close": None, "submit": None,
                "blocks": copy.deepcopy(blocks), "private_metadata": str(view.get("private_metadata") or ""),
                "callback_id": str(view.get("callback_id") or ""), "state": {"values": {}},
                "hash": f"{int(time.time())}.{next(self._hashes):08d}", "clear_on_close": False,
                "notify_on_close": False, "root_view_id": view_id, "previous_view_id": None,
                "app_id": self._app_id, "external_id": str(view.get("external_id") or ""), "bot_id": self._bot_id,
            }
            self._homes[user] = stored
            return {"ok": True, "view": copy.deepcopy(stored)}

    def _open(self, p: JSONDict) -> JSONDict:
        users = [u for u in str(p.get("users") or "").split(",") if u]
        channel = p.get("channel")
        if not users and not channel:
            return _refused("users_list_not_supplied")
        if len(users) > 1:
            return _refused("method_not_supported_for_channel_type")
        with self._lock:
            if not users:
                user = next((u for u, dm in self._dms.items() if dm == channel), None)
                if user is None:
                    return _refused("channel_not_found")
            else:
                user = users[0]
                if not self._user_known(user):
                    return _refused("user_not_found")
            already = user in self._dms
            dm = self.dm_channel(user)
        conversation: JSONDict = {"id": dm}
        if p.get("return_im") in (True, "true", "1", 1):
            conversation.update(is_im=True, user=user, is_open=True, created=int(time.time()))
        return {"ok": True, "no_op": already, "already_open": already, "channel": conversation}
