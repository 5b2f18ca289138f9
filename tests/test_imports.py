"""The project's modules form no import circle, none hides one behind a late import, and each imports on its own;
domains meet through typed hooks instead, and a hook that does not exist fails where it is registered.

The graph is read statically with `ast`: every `import` anywhere in a module (at its top or inside a function,
but not under `if TYPE_CHECKING:`) is an edge. Importing `a.b.c` also runs `a` and `a.b`; those count as edges too,
except the importer's own enclosing packages, which Python has always run before the importer itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.context import Context, Hook, Hooks

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "storage", "sandbox")
TOP_LEVEL_MODULES = ("app",)
# Alembic loads these itself, inside a migration run; they cannot be imported on their own.
NOT_IMPORTABLE_ALONE = ("storage.migrations",)
# Late imports for another reason than a circle: a development-only module kept out of production start-up.
# (importer, imported) → why; each is proven by a test below.
KEPT_OUT_OF_START_UP = {
    ("app", "sandbox.demo"): "`incident-bot demo` alone needs the sandbox; `serve` must not load it",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {name: ROOT / f"{name}.py" for name in TOP_LEVEL_MODULES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = project_modules()


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def enclosing_packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@dataclass(frozen=True)
class ImportSite:
    importer: str
    target: str
    line: int
    in_function: bool
    explicit: bool  # named in the statement, rather than a package Python runs on the way to it


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_from(importer: str, node: ast.ImportFrom) -> list[str]:
    """`from X import a, b`: X.a when that is a submodule, and X itself when a name is read from it."""
    if node.level:
        base_parts = importer.split(".") if is_package(importer) else importer.split(".")[:-1]
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join([*base_parts, node.module] if node.module else base_parts)
    else:
        base = node.module or ""
    submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
    # X counts as named only when some name is read from X itself; `from pkg import sub` runs pkg on the way.
    return submodules if len(submodules) == len(node.names) else [base, *submodules]


def import_sites(name: str) -> list[ImportSite]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))
    sites: list[ImportSite] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.orelse:
                visit(statement, in_function)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                targets = _resolve_from(name, node)
            for target in targets:
                if target in MODULES and target != name:
                    sites.append(ImportSite(name, target, node.lineno, in_function, explicit=True))
                # Running a.b.c runs a and a.b first; the importer's own packages have run already.
                for package in enclosing_packages(target):
                    if package in MODULES and package != name and package not in enclosing_packages(name):
                        sites.append(ImportSite(name, package, node.lineno, in_function, explicit=False))
            return
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return sites


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for site in import_sites(name):
            graph[name].add(site.target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    visiting: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()

    def walk(node: str) -> list[str] | None:
        visiting.append(node)
        on_path.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                return [*visiting[visiting.index(nxt):], nxt]
            if nxt not in done:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        on_path.discard(visiting.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = walk(start)
            if cycle:
                return cycle
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles found by breaking one edge of each in turn, so a failure lists them all, not just the first."""
    cycles = []
    remaining = {node: set(edges) for node, edges in graph.items()}
    while (cycle := find_cycle(remaining)) is not None:
        cycles.append(cycle)
        remaining[cycle[-2]].discard(cycle[-1])  # break this circle and look for the next
    return cycles


# ---- the static checks ------------------------------------------------------------------------------------------


def test_the_cycle_finder_returns_the_circle_it_found() -> None:
    """The checker itself: it names the circle's modules in order, and finds none where there is none."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_resolves_parent_packages_and_submodules() -> None:
    """`from handlers import commands` and `from handlers.commands.access import asking` both reach a submodule."""
    sites = {site.target for site in import_sites("handlers")}
    assert {"handlers.commands", "handlers.events"} <= sites
    assert "handlers.commands.access" in {
        site.target for name in MODULES if name.startswith("handlers.commands.") for site in import_sites(name)
    }


def test_no_import_circle() -> None:
    cycles = all_cycles(import_graph())
    assert not cycles, "import circles:\n" + "\n".join(" → ".join(cycle) for cycle in cycles)


def test_no_function_level_import_of_a_project_module() -> None:
    late = [
        f"{MODULES[site.importer].relative_to(ROOT)}:{site.line} imports {site.target}"
        for name in MODULES
        for site in import_sites(name)
        if site.in_function and site.explicit and (site.importer, site.target) not in KEPT_OUT_OF_START_UP
    ]
    assert not late, "imports of project modules inside functions:\n" + "\n".join(sorted(set(late)))


def test_the_modules_kept_out_of_start_up_are_imported_late_and_only_there() -> None:
    """The allowance above covers exactly the late imports that exist, none at a module's top."""
    sites = [site for name in MODULES for site in import_sites(name) if site.explicit
             and (site.importer, site.target) in KEPT_OUT_OF_START_UP]
    assert {(site.importer, site.target) for site in sites} == set(KEPT_OUT_OF_START_UP)
    assert all(site.in_function for site in sites)


_SERVE_START_UP = """
import sys, tempfile
import app
from gunicorn.app.base import BaseApplication  # what cmd_serve imports before gunicorn loads the worker
import handlers.server
from bot.settings import load_settings
with tempfile.TemporaryDirectory() as tmp:
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "secret",
                              "DATABASE_URL": f"sqlite:///{tmp}/serve.db", "SCHEDULER_ENABLED": "false"})
    runtime = app.build_runtime(settings)  # what the worker builds in Server.load
    runtime.ctx.db.dispose()
print(" ".join(sorted(m for m in sys.modules if m == "sandbox" or m.startswith("sandbox."))))
"""


def test_serve_start_up_loads_no_sandbox_module() -> None:
    """`serve`'s path (import app, the gunicorn worker, build the runtime) in a fresh interpreter leaves the
    demo's fake Slack and Google servers unloaded."""
    result = subprocess.run([sys.executable, "-c", _SERVE_START_UP], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"sandbox modules loaded at start-up: {result.stdout}"


# ---- each module imports on its own --------------------------------------------------------------------------

# One fresh interpreter for all keeps the run short: before each module, every project module is dropped from
# sys.modules, so each one imports with nothing of the project loaded before it. Third-party modules stay cached.
_IMPORT_EACH = """
import importlib, sys, traceback
project = ("app", "bot", "handlers", "storage", "sandbox", "templates")
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in project]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failed.append(name + "\\n" + traceback.format_exc())
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def importable_alone() -> list[str]:
    return sorted(name for name in MODULES if not name.startswith(NOT_IMPORTABLE_ALONE))


def test_every_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *importable_alone()],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"modules that fail to import on their own:\n{result.stdout}{result.stderr}"


# ---- typed hooks -------------------------------------------------------------------------------------------------


def bare_context() -> Context:
    """Hooks need nothing else of a Context; the other fields are never touched here."""
    unused: Any = None
    return Context(settings=unused, db=unused, clock=unused, messenger=unused, renderer=unused, jobs=unused,
                   presenter=unused)


@pytest.mark.parametrize("typo", ["on_opne", "on_strat", "on_action_added"])
def test_a_misspelt_hook_fails_at_registration(typo: str) -> None:
    """A reaction registered under a name that is not a hook raises, rather than waiting for a moment that never
    comes (the hooks were a dict keyed by string, where a typo registered silently)."""
    ctx = bare_context()
    with pytest.raises(AttributeError, match=typo):
        getattr(ctx.hooks, typo).register(lambda _ctx: None)


def test_no_hook_can_be_added_outside_the_declared_list() -> None:
    hooks = bare_context().hooks
    with pytest.raises(AttributeError, match="on_something_new"):
        hooks.on_something_new = Hook(bare_context(), "on_something_new", "")  # type: ignore[attr-defined]


def test_every_declared_hook_is_a_hook_under_its_own_name() -> None:
    hooks = bare_context().hooks
    for name in Hooks.__slots__:
        hook = getattr(hooks, name)
        assert isinstance(hook, Hook) and hook.name == name and hook.when


def test_reactions_get_the_context_and_the_arguments_in_registration_order_per_context() -> None:
    ctx, other = bare_context(), bare_context()
    seen: list[tuple[str, Context, int]] = []
    ctx.hooks.on_announced.register(lambda c, incident_id: seen.append(("first", c, incident_id)))
    ctx.hooks.on_announced.register(lambda c, incident_id: seen.append(("second", c, incident_id)))
    ctx.hooks.on_announced.fire(42)
    other.hooks.on_announced.fire(7)  # another context (another test's bot) has reactions of its own: none
    ctx.hooks.on_start.fire()  # nothing registered: nothing happens
    assert seen == [("first", ctx, 42), ("second", ctx, 42)]
