"""The App Home tab's view (views.publish): a header per section, one mrkdwn section per line, small print in a
context block. No controls: links to threads are mrkdwn links, since a link button still sends the app a
block_actions request. The view's callback_id and block ids are this surface's own."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import (
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.home import HomeView
from handlers.slack_limits import HEADER_TEXT

CALLBACK_ID = "home:incident-bot"
BLOCK_PREFIX = "home:"
# Every id this surface gives its view and blocks; nothing else may use them.
ID_PREFIXES = (CALLBACK_ID, BLOCK_PREFIX)


def home_view(view: HomeView) -> dict[str, Any]:
    blocks: list[Any] = []
    for number, section in enumerate(view.sections):
        if number:
            blocks.append(DividerBlock(block_id=f"{BLOCK_PREFIX}divider:{number}"))
        blocks.append(HeaderBlock(block_id=f"{BLOCK_PREFIX}{number}",
                                  text=PlainTextObject(text=section.title[:HEADER_TEXT], emoji=True)))
        blocks += [SectionBlock(block_id=f"{BLOCK_PREFIX}{number}:{line_number}", text=MarkdownTextObject(text=line))
                   for line_number, line in enumerate(section.lines)]
        if section.note:
            blocks.append(ContextBlock(block_id=f"{BLOCK_PREFIX}{number}:note",
                                       elements=[MarkdownTextObject(text=section.note)]))
    blocks.append(ContextBlock(block_id=f"{BLOCK_PREFIX}footer", elements=[MarkdownTextObject(text=view.footer)]))
    return View(type="home", callback_id=CALLBACK_ID, blocks=blocks).to_dict()
