"""The package's imports flow one way, along the data flow of DESIGN.md, and none hides inside a function."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minitron"

# Rows of DESIGN.md's layout, bottom first: a module may import only from its own row or the rows before it.
LAYERS = [
    ["minitron.errors", "minitron.arch", "minitron.signals", "minitron.stats", "minitron.callable"],
    ["minitron.io", "minitron.shards", "minitron.numerics", "minitron.record"],  # files; the one LM loss, autocast, the bf16 check
    ["minitron.tracking"],  # --report-to: metric records to TensorBoard / W&B
    # a multimodal checkpoint's language model; a GGUF file's RoPE settings, its layout both ways, its reading;
    # loading
    ["minitron.text_model", "minitron.gguf_config", "minitron.gguf_layout", "minitron.gguf_read", "minitron.load",
     "minitron.lazy"],
    ["minitron.chat"],  # the chat formats (and the package itself, which imports nothing)
    # model cards and GGUF export (its quantisers, its Ollama Modelfile in the model's chat format): a model in, files out
    ["minitron.export_checks", "minitron.card", "minitron.export", "minitron.export_quant", "minitron.export_ollama"],
    ["minitron.data"],
    ["minitron.importance"],
    ["minitron.prune"],
    ["minitron.distill"],
    ["minitron.correct"],  # teacher correction: the trainer without a teacher
    ["minitron.tasks"],  # benchmark tasks through lm-evaluation-harness (data from packages, lm-eval YAMLs)
    ["minitron.eval", "minitron.chat.generate", "minitron.chat.cli", "minitron.chat.replies"],  # measure, generate
    ["minitron.search"],
    ["minitron.report", "minitron.pipeline"],
    ["minitron.cli", "minitron.__main__"],
]

# Imports of minitron modules inside functions, each with its reason. Otherwise everything imports at the top
# (cli.py imports a command's module by name only when that command runs, for start-up speed).
FUNCTION_LEVEL_ALLOWED: set[tuple[str, str]] = {
    ("minitron.__main__", "minitron.cli"),  # inside the entry point, so that Ctrl-C while it loads is one line
    # `data --generate` has the teacher write the conversations it tokenises: generation is a layer above the data
    ("minitron.data.build", "minitron.chat.replies"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imported(node: ast.stmt, known: set[str]) -> list[str]:
    """The minitron modules an import statement runs: `from a.b import c` runs a.b.c when that is a module."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
    else:
        return []
    return [n for n in names if n.split(".")[0] == "minitron"]


def module_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements that run when the module is imported (not those inside functions)."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the minitron modules importing it runs, including the packages above them (their __init__
    runs first), except its own packages."""
    trees = modules()
    edges = {}
    for name, tree in trees.items():
        deps = set()
        for node in module_level_imports(tree):
            for target in imported(node, set(trees)):
                parts = target.split(".")
                deps |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges[name] = {d for d in deps if d in trees and d not in own}
    return edges


def layer_of(name: str) -> int:
    matches = [(len(prefix), i) for i, row in enumerate(LAYERS) for prefix in row
               if name == prefix or name.startswith(prefix + ".")]
    assert matches, f"{name} has no place in LAYERS (tests/test_imports.py): put it in its row of DESIGN.md"
    return max(matches)[1]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep] if dep in path else path + [dep]
            if dep not in state and (cycle := visit(dep, path + [dep])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_flow_one_way_along_the_data_flow():
    backwards = [f"{name} imports {dep}" for name, deps in graph().items() for dep in deps
                 if layer_of(dep) > layer_of(name)]
    assert not backwards, "imports against the data flow:\n" + "\n".join(sorted(backwards))


def test_no_minitron_imports_inside_functions():
    trees = modules()
    inside = set()
    for name, tree in trees.items():
        top = set(map(id, module_level_imports(tree)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                inside |= {(name, target) for target in imported(node, set(trees))}
    assert inside <= FUNCTION_LEVEL_ALLOWED, f"imports inside functions: {sorted(inside - FUNCTION_LEVEL_ALLOWED)}"
    assert not FUNCTION_LEVEL_ALLOWED - inside, f"stale allow-list entries: {FUNCTION_LEVEL_ALLOWED - inside}"
