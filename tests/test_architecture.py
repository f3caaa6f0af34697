"""The package's shape: no import circle between modules or between folders, no private name
used across modules.

Imports are read from the source (module level and inside functions alike: a lazy import is
still a dependency; so is a name a package lists in its `lazy_exports` table), with the standard
library's `ast`.
"""

from __future__ import annotations

import ast
import pathlib

import sare_tf

PACKAGE_ROOT = pathlib.Path(sare_tf.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _lazy_exports(node: ast.AST, package: str) -> list[tuple[str, list[str]]]:
    """`(module, names)` of a `lazy_exports(__name__, {module: (names, ...)})` call."""
    if not (
        isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "lazy_exports"
        and len(node.args) == 2
        and isinstance(node.args[1], ast.Dict)
    ):
        return []
    found = []
    for key, value in zip(node.args[1].keys, node.args[1].values, strict=True):
        module = key.value if key.value.startswith("sare_tf.") else f"{package}.{key.value}"
        found.append((module, [element.value for element in value.elts]))
    return found


def _imports(path: pathlib.Path, modules: dict) -> list[tuple[str, list[str]]]:
    """`(imported module, names taken from it)` for every sare_tf import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        found += _lazy_exports(node, _module_name(path))
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("sare_tf")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("sare_tf"):
                continue
            names = [alias.name for alias in node.names]
            submodules = [
                f"{node.module}.{name}" for name in names if f"{node.module}.{name}" in modules
            ]
            found.append((node.module, [n for n in names if f"{node.module}.{n}" not in modules]))
            found += [(module, []) for module in submodules]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = {target for target, _ in _imports(path, modules) if target in modules}
        # A package's __init__ re-exporting its own modules is not a dependency of theirs.
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_a_lazy_exports_table_counts_as_imports():
    imported = dict(_imports(PACKAGE_ROOT / "evaluation" / "__init__.py", _modules()))
    assert "recall_at_n" in imported["sare_tf.evaluation.recall"]
    assert "load_descriptor_model" in imported["sare_tf.artifacts"]


def test_the_cycle_finder_finds_a_known_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_modules():
    # Packages import their own modules to re-export them; those edges point down, never up.
    graph = {
        name: {t for t in targets if not t.startswith(name + ".")}
        for name, targets in _graph().items()
    }
    assert _cycles(graph) == []


def _folder(module: str) -> str:
    """The top-level part of the package a module belongs to (`sare_tf.evaluation.recall` ->
    `sare_tf.evaluation`; a top-level module is its own part)."""
    return ".".join(module.split(".")[:2])


def test_no_import_circle_between_folders():
    folders: dict[str, set[str]] = {}
    for name, targets in _graph().items():
        for target in targets:
            if _folder(target) != _folder(name):
                folders.setdefault(_folder(name), set()).add(_folder(target))
    assert _cycles(folders) == []


def test_no_private_name_is_imported_across_modules():
    modules = _modules()
    offenders = [
        f"{name} imports {target}.{imported}"
        for name, path in modules.items()
        for target, names in _imports(path, modules)
        for imported in names
        if imported.startswith("_") and not imported.startswith("__")  # dunders: __version__
    ]
    assert offenders == []


# The data flow's layers, foundations first: a module may import its own layer and the ones
# before it, never a later one (evaluation uses the index; the index never uses evaluation).
LAYERS = (
    ("foundations", {"__init__", "_version", "atomic", "hashing", "image_size", "precision",
                     "hardware", "registry", "config_options", "lazy_exports", "extras", "progress", "serving_client", "data", "layers",
                     "losses"}),
    ("model", {"model", "models", "synthetic"}),
    ("artifacts", {"artifacts"}),
    ("encoding", {"encoding"}),
    ("index, mining, export, import", {"index", "mining", "cluster_init", "export", "convert"}),
    ("evaluation", {"evaluation"}),
    ("training, saliency, serving", {"training", "saliency", "serving"}),
    ("applications", {"demo", "bench"}),
    ("command line", {"commands", "cli", "__main__"}),
)  # fmt: skip


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    for rank, (_, members) in enumerate(LAYERS):
        if part in members:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add its folder to LAYERS")


def test_no_module_imports_a_later_layer():
    offenders = [
        f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for name, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(name)
    ]
    assert offenders == []


# The one exception, and why: TensorFlow has no public function that freezes a concrete
# function's variables for the TFLite converter; `from_concrete_functions` without it leaves
# READ_VARIABLE ops the LiteRT interpreter cannot run (tried: "variable != nullptr was not true").
PRIVATE_IMPORTS_ALLOWED = {
    "sare_tf.artifacts.litert_format: tensorflow.python.framework.convert_to_constants"
}


def test_no_private_module_or_name_of_another_package_is_imported():
    """`keras.src`, `tensorflow.python` and `_private` names are other projects' internals: they
    move between releases without notice."""
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
                names = []
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules, names = [node.module], [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.startswith("sare_tf") or module == "__future__":
                    continue
                parts = module.split(".")
                private = any(p.startswith("_") for p in parts) or module.startswith(
                    ("keras.src", "tensorflow.python", "tf_keras.src")
                )
                private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private or private_names:
                    offenders.append(f"{name}: {module} {private_names or ''}".strip())
    assert sorted(set(offenders) - PRIVATE_IMPORTS_ALLOWED) == []
