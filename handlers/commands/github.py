"""`/incident github @user <login>`: whose GitHub login the issues of their action items are assigned to.

Not tied to an incident, so there is no incident to check access to: anyone who may use the bot may map anyone, as
anyone may name anyone an item's owner, and the answer says who is mapped to what. `-` removes the mapping; with no
login it shows it. The login follows GitHub's rules; GitHub itself refuses one that can't be assigned on the
repository, and the issue is then made unassigned with the owner named in its body.
"""

from __future__ import annotations

from slack_bolt import Respond

from bot import github_sync
from bot.context import Context
from handlers.commands.base import Answer, CommandRequest, incident_subcommand


@incident_subcommand("github")
def github(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    login_request = github_sync.parse_login_request(request.rest)
    with ctx.db.session() as session:
        login = github_sync.set_login(ctx, session, login_request, request.user_id)
    user = login_request.user_id
    if login_request.login is None:
        text = ctx.say("github.login_shown", user=user, login=login)
    elif login:
        text = ctx.say("github.login_set", user=user, login=login)
    else:
        text = ctx.say("github.login_removed", user=user)
    if not ctx.settings.github_enabled:
        text = f"{text}\n{ctx.say('github.sync_off')}"
    return Answer(text=text)
