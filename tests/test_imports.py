"""The import graph of the project's packages: no module imports itself back through others, and an
import placed inside a function says why on its line (``# lazy: <why>``: an optional or heavy
dependency, or the GPU), so that none is there to dodge a circle."""
from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("data", "engine", "fame", "measure", "models", "pipelines", "runners", "studies")
LAZY_REASON = "# lazy:"


def project_modules() -> dict[str, str]:
    """{dotted module name: path} of every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                    modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement imports (a ``from`` import: its module and, for
    each name, module.name, which is a module where one exists)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    source = ".".join(filter(None, [base if node.level else "", node.module or ""]))
    return [source] + [f"{source}.{alias.name}" for alias in node.names]


def function_imports(tree: ast.AST):
    """The import statements inside a function or method body."""
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield node


def module_graph() -> tuple[dict[str, set[str]], list[str]]:
    """({module: the project modules it imports at its top level}, function-level imports without a reason)."""
    modules = project_modules()
    graph, unexplained = {}, []
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree, lines = ast.parse(source), source.splitlines()
        inner = set(map(id, function_imports(tree)))
        edges = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if id(node) in inner:
                statement = " ".join(lines[node.lineno - 1:node.end_lineno])
                if LAZY_REASON not in statement:
                    unexplained.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
                continue
            is_package = path.endswith("__init__.py")
            edges |= {name for name in imported_names(node, module, is_package) if name in modules and name != module}
        graph[module] = edges
    return graph, unexplained


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back():
    graph, _ = module_graph()
    assert len(graph) > 50
    assert cycles(graph) == []


def test_every_import_inside_a_function_says_why():
    _, unexplained = module_graph()
    assert unexplained == [], "\n".join(unexplained)


def test_the_checks_find_a_circle_and_an_unexplained_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("def f():\n    import os\n    from x import y  # lazy: optional\n")
    assert [node.lineno for node in function_imports(tree)] == [2, 3]
