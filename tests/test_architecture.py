"""The house rules of ARCHITECTURE.md, checked: modules stay small, the command line is the only
place that parses arguments, ``--help`` loads no torch, and the library's imports have no cycle."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tsf.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tsf"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_tsf_modules(path: Path) -> set[str]:
    """The tsf modules ``path`` imports at module level (function-local imports are lazy on purpose)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tsf")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("tsf"):
                continue
            for alias in node.names:  # `from . import runtime` names a module; `from .x import f` the module x
                candidate = f"{target}.{alias.name}"
                found.add(candidate if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").is_file()
                          or (PACKAGE.parent / candidate.replace(".", "/")).is_dir() else target)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by concern (ARCHITECTURE.md)"


def test_argparse_only_under_tsf_cli():
    offenders = [str(p.relative_to(ROOT)) for p in MODULES
                 if "cli" not in p.relative_to(PACKAGE).parts and "argparse" in imported_names(p)]
    assert not offenders, f"argparse outside tsf/cli/: {offenders}"


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_library_imports_have_no_cycle():
    graph = {module_name(p): imported_tsf_modules(p) for p in MODULES}
    # a package's __init__ that re-exports lazily imports nothing; drop edges to packages' own names
    cycles = []

    def visit(node, stack):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        for child in sorted(graph.get(node, ())):
            if child != node and not child.startswith(node + "."):
                visit(child, stack + [node])

    for start in graph:
        visit(start, [])
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_the_library_imports_tsf_at_module_level():
    """Function-local imports of tsf modules hide cycles and pretend to save time; the command line
    (lazy on purpose, for --help) and the model's one lazy import of its loader are the exceptions."""
    allowed = {("tsf/model.py", "weights")}  # TimeSformer(pretrained_model=...), the seed API; weights imports model
    local = []
    for path in MODULES:
        relative = str(path.relative_to(ROOT))
        if relative.startswith("tsf/cli/"):
            continue
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and id(node) not in top and node.level and not _type_checking(tree, node):
                if (relative, node.module) not in allowed:
                    local.append(f"{relative}:{node.lineno} from {'.' * node.level}{node.module or ''}")
    assert not local, f"function-local imports of tsf modules: {local}"


def _type_checking(tree: ast.Module, node: ast.AST) -> bool:
    return any(isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test) and node in ast.walk(n) for n in tree.body)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command_loads_no_torch(command):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tsf", command, "--help"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported, f"`python -m tsf {command} --help` imports torch"
    assert "usage:" in result.stdout


@pytest.mark.parametrize("document", ["README.md", "ARCHITECTURE.md"])
def test_layout_tables_match_the_tree(document):
    text = (ROOT / document).read_text()
    named = set(__import__("re").findall(r"`(tsf/[\w/.]*)`", text))
    rooms = {f"tsf/{p.name}" + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p.is_dir() and (p / "__init__.py").is_file())}
    missing = sorted(room for room in rooms if room not in named and room.rstrip("/") not in named)
    assert not missing, f"{document} does not describe {missing}"
    stale = sorted(path for path in named if not (ROOT / path).exists())
    assert not stale, f"{document} names paths that do not exist: {stale}"
