"""Domain logic of incident-bot. Nothing in this package imports Slack libraries."""
