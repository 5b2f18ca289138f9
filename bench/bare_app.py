"""The baseline for bench/ack.py: a Bolt app that only acks, as a WSGI app for gunicorn.

    gunicorn --chdir bench bare_app:app   (bench/ack.py starts it with serve's worker settings)

Same Bolt version, same signature check, same authorization (one auth.test against SLACK_API_URL, then
cached), same listener pool size and process settings (app.tune_for_acks) as `incident-bot serve`; no database
and no work after the ack.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from app import tune_for_acks

bolt = App(
    client=WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]),
    signing_secret=os.environ["SLACK_SIGNING_SECRET"],
    listener_executor=ThreadPoolExecutor(max_workers=int(os.environ.get("LISTENER_THREADS", "16"))),
    # Bolt's default (process_before_response off), as the baseline was measured: a command's ack then
    # waits in Bolt's 10 ms poll for the listener's ack(); an event is acked before its listener runs.
    token_verification_enabled=False,
)


@bolt.command("/incident")
def incident(ack: Ack) -> None:
    ack(response_type="ephemeral", text="ok")


@bolt.event("message")
def message(event: dict[str, Any]) -> None:
    return None


app = SlackRequestHandler(bolt)
tune_for_acks()  # as `incident-bot serve` does once loaded: the GIL switch interval and the frozen start-up heap
