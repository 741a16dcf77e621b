"""The layer rule, checked by import-linter: each stage imports only the stages below it (pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def installed_layout(tmp: Path) -> Path:
    """The package as a wheel installs it: each stage folder copied under lamsc/ as pyproject maps it.

    import-linter walks the root package's folder, and in the source tree the stages sit beside it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in setuptools["package-dir"].items():
        shutil.copytree(ROOT / folder, tmp.joinpath(*package.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "default_model", "*.cu", "*.h"))
    return tmp


def test_stages_import_only_downward(tmp_path):
    pytest.importorskip("importlinter")
    site = installed_layout(tmp_path)
    done = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           "sys.exit(lint_imports(config_filename=sys.argv[1]))", str(ROOT / "pyproject.toml")],
                          cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


CYCLES = """
import grimp
graph = grimp.build_graph("lamsc", exclude_type_checking_imports=True)
for a in sorted(graph.modules):
    for b in sorted(graph.find_modules_directly_imported_by(a)):
        chain = graph.find_shortest_chain(importer=b, imported=a)
        if chain:
            print(a, "->", " -> ".join(chain))
"""


def test_no_module_imports_itself_through_others(tmp_path):
    """No import cycles, within a stage either (the layers contract sees only those between stages)."""
    pytest.importorskip("grimp")
    site = installed_layout(tmp_path)
    done = subprocess.run([sys.executable, "-c", CYCLES], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "", done.stdout


def test_the_contract_lists_every_stage_and_no_exceptions():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = config["tool"]["importlinter"]["contracts"]
    named = {m.strip() for layer in contract["layers"] for part in layer.split("|") for m in part.split(":")}
    stages = {p.removeprefix("lamsc.") for p in config["tool"]["setuptools"]["package-dir"] if p != "lamsc"}
    assert stages <= named
    assert "ignore_imports" not in contract and "unmatched_ignore_imports_alerting" not in contract


def _package_files():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in setuptools["package-dir"].items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield package, path


def _lamsc_imports(tree):
    """(node, module, names, inside a function) for each import of a lamsc module."""
    import ast

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("lamsc"):
                yield child, child.module, [a.name for a in child.names], inside
            elif isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("lamsc"):
                        yield child, a.name, [], inside
            yield from walk(child, inside)

    yield from walk(tree, False)


# What the full toolkit adds to a deployment's install (pyproject.toml's `full` extra), by module name
FULL_TOOLKIT = {"torch", "torchvision", "segment_anything", "mobile_sam", "timm", "cv2", "sionna", "torch_pruning",
                "faiss", "nncf", "flwr"}


def _needs_the_full_toolkit(module: str, modules: dict[str, Path]) -> bool:
    """Whether ``module`` (lamsc's) imports a package of the full toolkit at module level."""
    import ast

    tree = ast.parse(modules[module].read_text())
    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        if any(n.split(".")[0] in FULL_TOOLKIT for n in names):
            return True
    return False


def test_no_private_names_cross_a_stage_and_lamsc_imports_sit_at_module_level():
    """A stage uses another's public names only; and lamsc's own code is imported at module level, except a
    module that needs the full toolkit at import (torch, SAM, faiss...), which the deployment runtime
    (lamsc[edge], no torch) may import only where that work is asked for. import-linter and grimp see those
    imports too: the layers and the absence of cycles hold for them."""
    import ast

    modules = {}
    for package, path in _package_files():
        name = package if path.name == "__init__.py" else f"{package}.{path.stem}"
        modules[name] = path
    problems = []
    for package, path in _package_files():
        stage = package.split(".")[1] if "." in package else "lamsc"
        for node, module, names, in_function in _lamsc_imports(ast.parse(path.read_text())):
            other = module.split(".")[1] if module.count(".") else "lamsc"
            private = [n for n in names if n.startswith("_") and not n.endswith("__")]
            if private and other != stage:
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno} imports private {private} from {module}")
            if in_function and not (module in modules and _needs_the_full_toolkit(module, modules)):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module} inside a function")
    assert not problems, "\n".join(problems)
