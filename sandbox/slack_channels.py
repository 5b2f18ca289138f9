"""The Slack sandbox's channel management: conversations.create, .invite, .setTopic, .archive and .list.

Each follows Slack's method pages (docs.slack.dev / api.slack.com/methods), errors included:
- conversations.create: a name of at most 80 characters of lowercase letters, digits, `-` and `_`
  (`invalid_name_required` when empty, `invalid_name_maxlength` when longer, `invalid_name_specials` for anything
  else, upper case included, `invalid_name_punctuation` when it is only punctuation); `name_taken` when a channel,
  archived or not, has it. The bot that creates a channel is its only member; `creator` and `created` are set.
- conversations.invite: `users` is a comma-separated list (up to 1000). Each person is checked (`user_not_found`,
  `cant_invite_self`, `already_in_channel`, `cant_invite` for one the workspace won't let in); when any fails, the
  answer is that error with an `errors` list (user, error) and nobody is invited, unless `force` is true. The
  channel must exist for the bot (`channel_not_found`), not be archived (`is_archived`), and hold the bot
  (`not_in_channel`). Each person invited gets Slack's `channel_join` message with `inviter`.
- conversations.setTopic: at most 250 characters (`too_long`); posts the `channel_topic` message.
- conversations.archive: `already_archived`, `cant_archive_general`; posts `channel_archive`. An archived channel
  takes no new message (`is_archived`).
- conversations.list: `types` (default public_channel), `exclude_archived`, cursor pagination (`limit` under 1000);
  a private channel only when the bot is in it.
Scopes: with `grant()` the sandbox holds exactly those scopes, and a method needing another answers `missing_scope`
with `needed` and `provided`, as Slack does: channels:manage (public) or groups:write (private) to create, invite,
set the topic and archive; channels:read / groups:read to list. By default every scope is granted.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.slack import SlackSandbox

JSONDict = dict[str, Any]

NAME_MAX = 80
TOPIC_MAX = 250
INVITE_MAX = 1000
GENERAL = "general"


def _refused(error: str, **extra: Any) -> JSONDict:
    return {"ok": False, "error": error, **extra}


def name_problem(name: str) -> str | None:
    """Slack's verdict on a channel name, or None when it may be used."""
    if not name:
        return "invalid_name_required"
    if len(name) > NAME_MAX:
        return "invalid_name_maxlength"
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        return "invalid_name_specials"
    if not re.search(r"[a-z0-9]", name):
        return "invalid_name_punctuation"
    return None


class ChannelAdmin:
    """Channel management on a SlackSandbox's workspace; the sandbox's lock guards it all."""

    def __init__(self, sandbox: SlackSandbox) -> None:
        self.sandbox = sandbox
        self.granted: set[str] | None = None  # None: every scope
        self.archived: set[str] = set()
        self.details: dict[str, JSONDict] = {}  # channels created here: creator, created, topic
        self.uninvitable: dict[str, str] = {}  # user → the error inviting them gives (e.g. cant_invite)

    def methods(self) -> dict[str, Callable[[JSONDict], JSONDict]]:
        return {"conversations.create": self._create, "conversations.invite": self._invite,
                "conversations.setTopic": self._set_topic, "conversations.archive": self._archive,
                "conversations.list": self._list}

    # ---- what tests set up and read ----

    def grant(self, scopes: set[str] | None) -> None:
        """The bot token's scopes from now on (None: every scope)."""
        with self.sandbox._lock:
            self.granted = None if scopes is None else set(scopes)

    def refuse_invites(self, user: str, error: str = "cant_invite") -> None:
        with self.sandbox._lock:
            self.uninvitable[user] = error

    def created(self) -> list[JSONDict]:
        """The channels created through conversations.create, oldest first."""
        with self.sandbox._lock:
            return [self.conversation(c) for c in self.details]

    def conversation(self, channel: str) -> JSONDict:
        """The conversation object Slack returns, with what this module keeps about the channel."""
        with self.sandbox._lock:
            found = self.sandbox._conversation(channel)
            found.update(copy.deepcopy(self.details.get(channel, {})))
            found["is_archived"] = channel in self.archived
            found["is_member"] = self.sandbox.is_member(channel, self.sandbox.bot_user_id)
            return found

    # ---- helpers ----

    def _missing(self, *needed: str) -> JSONDict | None:
        if self.granted is None or any(scope in self.granted for scope in needed):
            return None
        return _refused("missing_scope", needed=",".join(needed), provided=",".join(sorted(self.granted)))

    def _manage_scope(self, channel: str) -> JSONDict | None:
        return self._missing("groups:write" if self.sandbox._is_private(channel) else "channels:manage")

    def _usable(self, p: JSONDict) -> tuple[str, JSONDict | None]:
        """The channel of `p`, or the refusal: unknown or hidden, archived, without the bot, missing scope."""
        sandbox = self.sandbox
        channel = sandbox._channel_id(str(p.get("channel") or ""))
        if not channel or not sandbox._known(channel) or not sandbox._visible_to_bot(channel):
            return channel, _refused("channel_not_found")
        refusal = self._manage_scope(channel)
        if refusal is not None:
            return channel, refusal
        if channel in self.archived:
            return channel, _refused("is_archived")
        if not sandbox.is_member(channel, sandbox.bot_user_id):
            return channel, _refused("not_in_channel")
        return channel, None

    def _announce(self, channel: str, message: JSONDict) -> None:
        """Stores a channel message Slack posts by itself (join, topic, archive) and delivers its event."""
        stored = self.sandbox._insert(channel, {"type": "message", **message})
        deliver = self.sandbox._echo_after(channel, stored)
        if deliver is not None:
            deliver()

    # ---- the methods ----

    def _create(self, p: JSONDict) -> JSONDict:
        sandbox = self.sandbox
        name = str(p.get("name") or "")
        private = str(p.get("is_private") or "").lower() in ("1", "true")
        refusal = self._missing("groups:write" if private else "channels:manage")
        if refusal is not None:
            return refusal
        problem = name_problem(name)
        if problem is not None:
            return _refused(problem)
        with sandbox._lock:
            if name in sandbox._channels.values():
                return _refused("name_taken")
            channel = sandbox._next_id("C")
            sandbox.add_channel(channel, name, private=private, members=[])
            self.details[channel] = {"creator": sandbox.bot_user_id, "created": int(sandbox._clock()),
                                     "topic": {"value": "", "creator": "", "last_set": 0}}
            return {"ok": True, "channel": self.conversation(channel)}

    def _invite(self, p: JSONDict) -> JSONDict:
        sandbox = self.sandbox
        users = [u.strip() for u in str(p.get("users") or "").split(",") if u.strip()]
        with sandbox._lock:
            channel, refusal = self._usable(p)
            if refusal is not None:
                return refusal
            if not users:
                return _refused("no_user")
            if len(users) > INVITE_MAX:
                return _refused("too_many_users")
            errors = [{"user": user, "ok": False, "error": error}
                      for user in users if (error := self._invite_problem(channel, user)) is not None]
            if errors and str(p.get("force") or "").lower() not in ("1", "true"):
                return _refused(str(errors[0]["error"]), errors=errors)
            refused = {e["user"] for e in errors}
            joined = [user for user in dict.fromkeys(users) if user not in refused]
            for user in joined:
                sandbox.add_member(channel, user)
            for user in joined:
                self._announce(channel, {"subtype": "channel_join", "user": user, "inviter": sandbox.bot_user_id,
                                         "text": f"<@{user}> has joined the channel"})
            answer: JSONDict = {"ok": True, "channel": self.conversation(channel)}
            if errors:
                answer["errors"] = errors
            return answer

    def _invite_problem(self, channel: str, user: str) -> str | None:
        sandbox = self.sandbox
        found = sandbox._users.get(user)
        if found is None:
            return "user_not_found"
        if user == sandbox.bot_user_id:
            return "cant_invite_self"
        if user in self.uninvitable:
            return self.uninvitable[user]
        if found.get("deleted"):
            return "cant_invite"
        if sandbox.is_member(channel, user):
            return "already_in_channel"
        return None

    def _set_topic(self, p: JSONDict) -> JSONDict:
        sandbox = self.sandbox
        topic = p.get("topic")
        with sandbox._lock:
            channel, refusal = self._usable(p)
            if refusal is not None:
                return refusal
            if not isinstance(topic, str):
                return _refused("invalid_arguments")
            if len(topic) > TOPIC_MAX:
                return _refused("too_long")
            self.details.setdefault(channel, {})["topic"] = {"value": topic, "creator": sandbox.bot_user_id,
                                                             "last_set": int(sandbox._clock())}
            self._announce(channel, {"subtype": "channel_topic", "user": sandbox.bot_user_id, "topic": topic,
                                     "text": f"set the channel topic: {topic}"})
            return {"ok": True, "channel": self.conversation(channel)}

    def _archive(self, p: JSONDict) -> JSONDict:
        sandbox = self.sandbox
        with sandbox._lock:
            channel, refusal = self._usable(p)
            if refusal is not None and refusal["error"] == "is_archived":
                return _refused("already_archived")
            if refusal is not None:
                return refusal
            if sandbox._channels.get(channel) == GENERAL:
                return _refused("cant_archive_general")
            self._announce(channel, {"subtype": "channel_archive", "user": sandbox.bot_user_id,
                                     "text": "archived the channel"})
            self.archived.add(channel)
            return {"ok": True}

    def _list(self, p: JSONDict) -> JSONDict:
        sandbox = self.sandbox
        types = set(str(p.get("types") or "public_channel").split(","))
        needed = [s for t, s in (("public_channel", "channels:read"), ("private_channel", "groups:read")) if t in types]
        for scope in needed:
            refusal = self._missing(scope)
            if refusal is not None:
                return refusal
        exclude_archived = str(p.get("exclude_archived") or "").lower() in ("1", "true")
        with sandbox._lock:
            known = sorted(c for c in sandbox._channels if c[:1] in ("C", "G"))
            found = [self.conversation(c) for c in known
                     if sandbox._visible_to_bot(c)
                     and ("private_channel" if sandbox._is_private(c) else "public_channel") in types
                     and not (exclude_archived and c in self.archived)]
        page, cursor = sandbox._page(found, p)
        return {"ok": True, "channels": page, "response_metadata": {"next_cursor": cursor}}
