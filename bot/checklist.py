"""The guide's final Post-Mortem checklist (기본 / 분석 / Post-Mortem 회의 / 보고 / 예방), as stable keys."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# (group key, ko title, en title, [(item key, ko label, en label)])
GROUPS: tuple[tuple[str, str, str, tuple[tuple[str, str, str], ...]], ...] = (
    ("basic", "기본", "Basics", (
        ("rollback", "롤백 완료 확인", "Rollback confirmed"),
        ("evidence", "긴급 증거 수집", "Evidence preserved"),
        ("announce", "팀 공지", "Team announcement"),
    )),
    ("analysis", "분석 (1-2시간)", "Analysis (1–2 h)", (
        ("code", "코드 변경사항 검토", "Code changes reviewed"),
        ("logs", "에러 로그 분석", "Error logs analysed"),
        ("perf", "성능 데이터 분석", "Performance data analysed"),
        ("tests", "테스트 커버리지 검토", "Test coverage reviewed"),
        ("infra", "인프라 설정 검토", "Infrastructure settings reviewed"),
    )),
    ("meeting", "Post-Mortem (2시간 후)", "Post-mortem meeting (after 2 h)", (
        ("attendees", "회의 참석자 모임", "Attendees gathered"),
        ("timeline", "타임라인 구성", "Timeline built"),
        ("whys", "근본 원인 분석 (5 Whys)", "Root cause analysis (5 Whys)"),
        ("improvements", "개선사항 도출", "Improvements identified"),
        ("actions", "액션 아이템 정리", "Action items agreed"),
    )),
    ("report", "보고", "Reporting", (
        ("write", "Post-Mortem 보고서 작성", "Post-mortem report written"),
        ("share", "팀에 공유", "Shared with the team"),
        ("track", "개선사항 추적", "Improvements tracked"),
    )),
    ("prevent", "예방", "Prevention", (
        ("implement", "개선사항 구현", "Improvements implemented"),
        ("tests", "테스트 강화", "Tests hardened"),
        ("process", "프로세스 개선", "Process improved"),
        ("training", "팀 교육", "Team training"),
    )),
)

ALL_KEYS: tuple[str, ...] = tuple(f"{g}.{k}" for g, _, _, items in GROUPS for k, _, _ in items)


@dataclass(frozen=True)
class ChecklistEntry:
    key: str
    label: str
    checked: bool


@dataclass(frozen=True)
class ChecklistGroup:
    key: str
    title: str
    items: list[ChecklistEntry]

    @property
    def done(self) -> int:
        return sum(1 for item in self.items if item.checked)

    @property
    def total(self) -> int:
        return len(self.items)


def build(checked_keys: Iterable[str], locale: str) -> list[ChecklistGroup]:
    checked = set(checked_keys)
    ko = locale == "ko"
    return [
        ChecklistGroup(
            key=group,
            title=ko_title if ko else en_title,
            items=[
                ChecklistEntry(f"{group}.{key}", ko_label if ko else en_label, f"{group}.{key}" in checked)
                for key, ko_label, en_label in items
            ],
        )
        for group, ko_title, en_title, items in GROUPS
    ]


def click_changes(group: str, selected: Iterable[str], shown: Iterable[str] | None) -> dict[str, bool]:
    """What one click on a group's checkboxes changed: the selection Slack sends minus the one the clicked message
    showed, so two people ticking different items at the same moment never undo each other. Without the shown
    state (no message in the payload), the selection is the whole truth for the group."""
    group_keys = {key for key in ALL_KEYS if key.startswith(f"{group}.")}
    ticked = set(selected) & group_keys
    if shown is None:
        return {key: key in ticked for key in group_keys}
    return {key: key in ticked for key in (ticked ^ set(shown)) & group_keys}
