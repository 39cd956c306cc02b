"""The package's import graph, read from the source (nothing is imported): no cycle among
module-level imports anywhere, none at all (lazy imports inside functions included) among the
training and inference modules, and the two loop drivers imported by no module but the commands
(what they share lives in bertlab.train.loop and its neighbours)."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bertlab")
DRIVERS = ("bertlab.train.pretrain", "bertlab.train.finetune")


def modules() -> dict[str, str]:
    """{dotted module name: file} of every module of the package."""
    found = {}
    root = os.path.dirname(PACKAGE)
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


def import_graph(*, module_level_only: bool) -> dict[str, set[str]]:
    """{module: the package modules it imports}; `from a.b import c` counts a.b and a.b.c."""
    mods = modules()
    graph = {}
    for module, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        nodes = tree.body if module_level_only else list(ast.walk(tree))
        targets = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[module] = {t for t in targets if t in mods and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, grey = on the stack)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "black"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_on_hand_made_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_at_module_level():
    assert find_cycle(import_graph(module_level_only=True)) is None


def test_training_and_inference_have_no_cycle_even_through_lazy_imports():
    graph = import_graph(module_level_only=False)
    ours = {m for m in graph if m.startswith("bertlab.train") or m == "bertlab.inference"}
    assert find_cycle({m: graph[m] & ours for m in ours}) is None


def test_only_commands_import_a_loop_driver():
    graph = import_graph(module_level_only=False)
    importers = {m for m, targets in graph.items() if targets & set(DRIVERS)}
    assert importers and all(m.startswith("bertlab.commands.") for m in importers), importers
    assert "bertlab.train.pretrain" not in graph["bertlab.train.finetune"]
    assert "bertlab.train.finetune" not in graph["bertlab.train.pretrain"]
