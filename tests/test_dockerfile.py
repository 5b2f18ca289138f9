"""Static checks of the Dockerfile (Docker can't run where the tests run).

A small parser turns the Dockerfile into stages of instructions, following
Docker's rules closely enough for what we check: comment lines, line
continuations (including comment/blank lines inside them), the ``escape``
directive, exec (JSON array) vs shell form, and both ``ENV`` syntaxes.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"

SLACK_TOKEN = re.compile(r"xox[abposre]-|xapp-")
SECRET_NAME = re.compile(r"^SLACK_|TOKEN|SECRET|PASSWORD|PRIVATE_KEY", re.IGNORECASE)


@dataclass
class Instruction:
    keyword: str  # upper-cased, e.g. "ENV"
    args: str  # raw argument text, continuations joined
    line: int  # 1-based line where the instruction starts

    def exec_form(self) -> list[str] | None:
        """The JSON-array argument list, or None for shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None  # Docker treats an invalid array as shell form, and so do we
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return None

    def command(self) -> list[str]:
        """argv as Docker would run it (shell form goes through /bin/sh -c)."""
        argv = self.exec_form()
        return argv if argv is not None else ["/bin/sh", "-c", self.args.strip()]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    parent: Stage | None = None  # set when FROM names an earlier stage

    def _own(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    @property
    def env(self) -> dict[str, str]:
        env = dict(self.parent.env) if self.parent else {}
        for instruction in self._own("ENV"):
            env.update(parse_env(instruction.args, env))
        return env

    @property
    def user(self) -> str | None:
        users = self._own("USER")
        if users:
            return expand(users[-1].args.strip(), self.env)
        return self.parent.user if self.parent else None

    @property
    def exposed_ports(self) -> set[int]:
        ports = set(self.parent.exposed_ports) if self.parent else set()
        for instruction in self._own("EXPOSE"):
            for spec in expand(instruction.args, self.env).split():
                ports.add(int(spec.split("/")[0]))
        return ports

    @property
    def entrypoint(self) -> list[str] | None:
        found = self._own("ENTRYPOINT")
        if found:
            return found[-1].command()
        return self.parent.entrypoint if self.parent else None

    @property
    def cmd(self) -> list[str] | None:
        found = self._own("CMD")
        if found:
            return found[-1].command()
        # Docker resets an inherited CMD when the stage sets its own ENTRYPOINT.
        if self._own("ENTRYPOINT"):
            return None
        return self.parent.cmd if self.parent else None

    @property
    def run_command(self) -> list[str] | None:
        """What the container runs: ENTRYPOINT followed by CMD."""
        if self.entrypoint is not None:
            return self.entrypoint + (self.cmd or [])
        return self.cmd


def expand(text: str, env: dict[str, str]) -> str:
    """$VAR, ${VAR} and ${VAR:-default} substitution, as used in USER/EXPOSE/ENV."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if match.group(2) is not None:
            return env.get(name) or match.group(2)
        return env.get(name, "")

    return re.sub(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))", value, text)


def parse_env(args: str, env: dict[str, str]) -> dict[str, str]:
    """ENV key=value [key=value ...] or the legacy ENV key value."""
    args = args.strip()
    first = args.split(None, 1)
    if "=" not in first[0]:
        key, _, value = args.partition(" ")
        return {key: expand(value.strip(), env)}
    result: dict[str, str] = {}
    for token in shlex.split(args, posix=True):
        key, _, value = token.partition("=")
        # Later pairs on the same line see earlier ones only after the line (Docker semantics).
        result[key] = expand(value, env)
    return result


def parse_dockerfile(text: str) -> list[Stage]:
    lines = text.splitlines()
    escape = "\\"
    # Parser directives: only at the very top, before any comment/instruction.
    for line in lines:
        directive = re.match(r"^#\s*(\w+)\s*=\s*(\S+)\s*$", line)
        if not directive:
            break
        if directive.group(1).lower() == "escape":
            escape = directive.group(2)

    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        # Comment and blank lines are dropped, even in the middle of a continued
        # instruction (Docker allows both there).
        if not stripped or stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if raw.rstrip().endswith(escape):
            buffer.append(raw.rstrip()[: -len(escape)])
            continue
        buffer.append(raw)
        joined = " ".join(part.strip() for part in buffer)
        buffer = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    if buffer:
        raise ValueError(f"line {start}: continuation runs past the end of the file")

    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            parent = next((s for s in stages if s.name and s.name.lower() == base.lower()), None)
            stages.append(Stage(base=base, name=name, parent=parent))
        elif not stages:
            if instruction.keyword != "ARG":  # only ARG may precede the first FROM
                raise ValueError(f"line {instruction.line}: {instruction.keyword} before FROM")
        else:
            stages[-1].instructions.append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages) -> Stage:
    return stages[-1]


# --- the parser itself -------------------------------------------------------------


def test_parser_handles_continuations_comments_and_forms():
    stages = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "ARG PY=3.11\n"
        "FROM python:3.11-slim AS base\n"
        "ENV A=1 \\\n"
        "    # a comment inside a continuation is dropped\n"
        '    B="two words" \\\n'
        "\n"
        "    C=$A\n"
        "ENV LEGACY some value\n"
        "FROM base\n"
        "user app\n"
        "EXPOSE ${PORT:-8000} 9090/tcp\n"
        "ENTRYPOINT [\"tini\", \"--\"]\n"
        "CMD run it\n"
    )
    base, final = stages
    assert base.name == "base"
    assert base.env == {"A": "1", "B": "two words", "C": "", "LEGACY": "some value"}
    assert final.parent is base
    assert final.env == base.env
    assert final.user == "app"
    assert final.exposed_ports == {8000, 9090}
    assert final.run_command == ["tini", "--", "/bin/sh", "-c", "run it"]


def test_parser_escape_directive_and_exec_form():
    (stage,) = parse_dockerfile('# escape=`\nFROM scratch\nCMD ["a", `\n  "b"]\n')
    assert stage.run_command == ["a", "b"]


# --- the real Dockerfile ------------------------------------------------------------


def test_is_multi_stage_on_python_311_slim(stages):
    assert len(stages) >= 2, "build in one stage, copy only the venv into the final one"
    for stage in stages:
        if stage.parent is None:
            assert stage.base.startswith("python:3.11-slim"), stage.base


def test_final_stage_copies_from_the_builder(stages, final):
    builder_names = {s.name for s in stages[:-1] if s.name} | {str(n) for n in range(len(stages) - 1)}
    sources = [
        m.group(1)
        for i in final.instructions
        if i.keyword == "COPY" and (m := re.search(r"--from=(\S+)", i.args))
    ]
    assert set(sources) & builder_names, f"final stage copies from {sources}, not a build stage"


def test_final_stage_runs_as_non_root(final):
    assert final.user, "final stage must set USER"
    user, _, group = final.user.partition(":")
    assert user not in {"root", "0"}, final.user
    assert group not in {"root", "0"}, final.user


def test_final_command_is_incident_bot_serve(final):
    # Exec form, so incident-bot is PID 1 and receives Cloud Run's SIGTERM itself.
    assert final.run_command == ["incident-bot", "serve"]


def test_port_is_set_and_exposed(final):
    env = final.env
    assert env.get("PORT", "").isdigit(), env
    assert final.exposed_ports == {int(env["PORT"])}
    assert env.get("PYTHONUNBUFFERED") == "1"


def test_no_secrets_baked_in(stages):
    text = DOCKERFILE.read_text()
    assert not SLACK_TOKEN.search(text), "a Slack token is written into the Dockerfile"
    for stage in stages:
        for key, value in stage.env.items():
            assert not key.upper().startswith("SLACK_"), f"ENV {key}: Slack settings come at runtime"
            assert not (SECRET_NAME.search(key) and value), f"ENV {key} looks like a secret"
        for instruction in stage.instructions:
            if instruction.keyword == "ARG" and "=" in instruction.args:
                name, _, default = instruction.args.partition("=")
                assert not (SECRET_NAME.search(name) and default.strip()), f"ARG {name} has a secret default"


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = {
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", ".venv", "*.db", ".pytest_cache", ".env"):
        assert entry in ignored, entry
