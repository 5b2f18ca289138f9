"""What one click on a checklist group changes (bot.checklist.click_changes): a pure rule, kept out of handlers."""

from __future__ import annotations

from bot.checklist import click_changes


def test_only_what_this_click_changed_is_applied() -> None:
    # The message showed rollback ticked; this person ticked evidence. Rollback is not touched, so someone else
    # unticking it at the same moment is not undone.
    shown = {"basic.rollback"}
    assert click_changes("basic", {"basic.rollback", "basic.evidence"}, shown) == {"basic.evidence": True}
    assert click_changes("basic", set(), shown) == {"basic.rollback": False}


def test_without_the_shown_state_the_selection_is_the_whole_group() -> None:
    assert click_changes("basic", {"basic.announce"}, None) == {
        "basic.rollback": False, "basic.evidence": False, "basic.announce": True,
    }


def test_keys_of_other_groups_or_unknown_keys_change_nothing() -> None:
    assert click_changes("basic", {"analysis.code", "basic.nope"}, set()) == {}
    assert click_changes("analysis", {"analysis.logs"}, {"basic.rollback"}) == {"analysis.logs": True}
