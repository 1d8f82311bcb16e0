"""The shape of the code: one-way layers (import-linter's contracts), no import cycle, one reader of the environment,
pages without TensorFlow, rooms of a readable size. These fail when a change breaks the structure docs/architecture.md
describes, whatever the behaviour tests say."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import grimp
from conftest import ROOT

CORE = ROOT / "core"
MAX_MODULE_LINES = 420  # "~400": a module past this has become two rooms
MAX_FUNCTION_LINES = 60  # of code, past the docstring; longer ones say why in their docstring ("Long: ...")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_the_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")  # import-linter, reading pyproject.toml's contracts
    out = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in out.stdout, out.stdout[-2000:]


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_module_of_core_imports_itself_back_not_even_inside_a_function():
    graph = grimp.build_graph("core")  # every import statement, those inside functions too
    modules = {m for m in graph.modules if m.startswith("core")}
    assert len(modules) > 60
    assert _cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle():
    class Graph:
        edges: ClassVar = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return self.edges.get(m, set())

    assert _cycles(Graph(), {"a", "b", "c", "d"}) == [["a", "b", "c"]]


def _environment_reads(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv", "putenv")
            and (isinstance(node.value, ast.Name) and node.value.id == "os")
        ):
            lines.append(node.lineno)
    return lines


def test_environment_variables_are_read_in_one_module():
    readers = {
        str(p.relative_to(ROOT)): lines
        for p in [*_sources("core", "ui", "pages"), ROOT / "app.py"]
        if (lines := _environment_reads(p))
    }
    assert set(readers) == {"core/settings.py"}, readers


def test_the_environment_check_sees_a_read(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nx = os.environ.get('HOME')\n")
    assert _environment_reads(sample) == [2]


def _imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_pages_and_the_app_import_no_tensorflow_themselves():
    for path in [*_sources("pages"), ROOT / "app.py"]:
        assert not _imported(path) & {"tensorflow", "keras"}, path


def test_every_subpackage_says_what_lives_there_and_what_it_may_import():
    for init in sorted(CORE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 60 and "import" in doc, init.relative_to(ROOT)


def test_modules_are_rooms_of_a_readable_size():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _sources("core")}
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_long_functions_say_why():
    unexplained = []
    for path in _sources("core"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                doc = node.body[0] if ast.get_docstring(node) else None
                length = node.end_lineno - node.lineno + 1 - (doc.end_lineno - doc.lineno + 1 if doc else 0)
                if length > MAX_FUNCTION_LINES and "Long:" not in (ast.get_docstring(node) or ""):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert unexplained == []
