"""The shape of the house: ev2lib's imports point one way (down :data:`ORDER`, the map in the README), no module
reaches into another's private names, and every module and function reads in one sitting. ``report`` is a package:
what each chapter's records say, one module a chapter, all at report's place in the order."""
import ast
from pathlib import Path

from ev2lib.results import imports_of

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ev2lib"
# Lowest first: a module may import only modules before it (lazy imports inside functions included).
ORDER = ("errors", "files", "stats", "results", "scaling", "configs", "blocks", "weights", "model", "summary",
         "randaugment", "augment", "data", "progressive", "recipe", "checkpoint", "train", "bench", "fast_path",
         "nas", "proxy", "search", "ablations", "transfer", "report", "book", "__init__")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 60


def _files() -> dict[str, Path]:
    """Every module: ``{"train": path, "report": path of report/__init__.py, "report.nas": ..., ...}``."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = path
    return out


def _modules():
    return sorted(_files())


def _imports(name: str, path: Path) -> set[str]:
    """The ev2lib modules ``name`` imports (dotted, relative imports resolved), inside functions too."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            found |= {".".join(base)} if node.module else {".".join(base + [a.name]) for a in node.names}
    return {m for m in found if m in _files()}


def _rank(module: str) -> int:
    return ORDER.index(module.split(".")[0])


def test_every_module_has_its_place_and_imports_only_below_it():
    assert sorted(ORDER) == sorted({m.split(".")[0] for m in _modules()}), \
        "a new module needs its place in ORDER (and in the README's map)"
    upward = [f"{m} imports {dep}" for m, path in _files().items() for dep in _imports(m, path)
              if _rank(dep) > _rank(m) or (_rank(dep) == _rank(m) and dep != m.split(".")[0])]
    assert not upward, upward
    assert all(imports_of(m) == {d for d in _imports(m, p) if "." not in d} for m, p in _files().items()
               if "." not in m and m != "report")  # the currency rule reads the same imports


def test_the_order_check_catches_a_circle(tmp_path):
    (tmp_path / "a.py").write_text("from .b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import g\n")  # lazy, inside a function: still an import
    assert imports_of("a", tmp_path) == {"b"} and imports_of("b", tmp_path) == {"a"}


def _private_uses(source: str) -> list[str]:
    tree, found, aliases = ast.parse(source), [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ev2lib")):
            found += [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
            if not node.module or node.module == "ev2lib":
                aliases |= {a.asname or a.name for a in node.names}  # "from . import augment as aug"
    found += [f"{n.value.id}.{n.attr}" for n in ast.walk(tree) if isinstance(n, ast.Attribute)
              and isinstance(n.value, ast.Name) and n.value.id in aliases and n.attr.startswith("_")]
    return found


def test_no_module_imports_another_modules_private_names():
    bad = {m: _private_uses(path.read_text()) for m, path in _files().items()}
    assert not {m: v for m, v in bad.items() if v}
    assert _private_uses("from .data import _seeds\nfrom . import augment as aug\naug._mix(1)\n") == [
        "_seeds", "aug._mix"]  # the check sees both forms


def test_modules_and_functions_read_in_one_sitting():
    long_modules = {m: n for m, path in _files().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long_modules, long_modules
    long_functions = [f"{m}.{n.name} ({n.end_lineno - n.lineno + 1} lines)" for m, path in _files().items()
                      for n in ast.walk(ast.parse(path.read_text()))
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long_functions, long_functions
