"""Local stand-ins for Slack: a fake Web API server (`sandbox.slack`) and a signed-request driver
(`sandbox.driver`) so the app can be exercised end to end without any network beyond loopback."""
