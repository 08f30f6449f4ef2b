import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import hf_recunlearn


def test_every_public_name_resolves():
    for name in hf_recunlearn.__all__:
        assert getattr(hf_recunlearn, name) is not None, name


def test_all_is_sorted_and_unique():
    assert hf_recunlearn.__all__ == sorted(set(hf_recunlearn.__all__))


def test_import_is_light():
    """`import hf_recunlearn` must not import huggingface_hub (tests point it at a local Hub first)."""
    code = "import sys, hf_recunlearn; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_trainer_exports_match_modules():
    trainer = importlib.import_module("hf_recunlearn.trainer")
    for name in trainer.__all__:
        assert hasattr(trainer, name), name


PACKAGE = Path(hf_recunlearn.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """Module -> the hf_recunlearn modules it imports anywhere in its source (function-level imports included;
    `if TYPE_CHECKING:` blocks, which never run, excluded)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}  # fmt: skip
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_the_modules():
    graph = import_graph()
    assert {"hf_recunlearn.hub", "hf_recunlearn.apa_recommender", "hf_recunlearn.apa_format"} <= set(graph)
    assert "hf_recunlearn.hub" in graph["hf_recunlearn.apa_recommender"]  # the walk sees function-level imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # The check itself finds a cycle when there is one: the one an APA import in `hub` would close.
    assert find_cycle({**graph, "hf_recunlearn.hub": graph["hf_recunlearn.hub"] | {"hf_recunlearn.apa_hub"}})


def test_the_hub_layer_imports_no_apa_module():
    """`hub` is generic: nothing it imports, directly or not, function-level imports included, is APA's."""
    graph = import_graph()
    apa = {m for m in graph if "apa" in m.rsplit(".", 1)[-1]} | {"hf_recunlearn.aggregation"}
    assert {"hf_recunlearn.apa_format", "hf_recunlearn.apa_hub", "hf_recunlearn.trainer.apa_trainer"} <= apa
    reached, todo = set(), ["hf_recunlearn.hub"]
    while todo:
        for module in graph[todo.pop()] - reached:
            reached.add(module)
            todo.append(module)
    assert not reached & apa, sorted(reached & apa)
    assert "hf_recunlearn.hub" in graph["hf_recunlearn.apa_hub"]  # APA's format depends on the Hub layer, not back


def test_a_fresh_hub_import_knows_the_apa_format(tmp_path):
    """`from hf_recunlearn import hub` alone (the package imports lazily) still pushes APA: the format registers."""
    code = (
        "import sys; from hf_recunlearn import hub\n"
        "assert 'hf_recunlearn.apa_hub' not in sys.modules\n"
        f"try: hub.push({str(tmp_path)!r}, 'user/repo', token=False)\n"
        "except FileNotFoundError as err: print(err)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == (
        f"{str(tmp_path)!r} has no apa_config.json: pass an APA directory (written by `APATrainer`), or use "
        "`push_adapter` for a PEFT adapter directory."
    )


def test_the_installed_package_holds_no_test_server():
    """The Hub emulator the tests use lives in tests/, not in the package users install."""
    from setuptools import find_packages

    assert not [p for p in find_packages(str(PACKAGE.parent)) if "test" in p]
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        assert "HTTPServer" not in source and "class HubServer" not in source, path
    assert importlib.util.find_spec("hf_recunlearn.testing") is None


def test_cli_start_prints_no_third_party_import_noise():
    """
    bitsandbytes (imported by peft, which every subcommand's config imports) warns on import about its optional
    `kernels` package; the CLI module keeps it quiet.
    """
    code = "import hf_recunlearn.cli, peft, bitsandbytes"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "kernels" not in run.stderr, run.stderr
