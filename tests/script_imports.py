"""Helpers for tests/test_envs.py: which rule runs which script in which conda env, and
which third-party modules each script needs.

Nothing here is listed by hand: rules are parsed from the Snakefile and
``workflow/rules/*.smk`` (their ``conda:`` and ``script:`` directives), imports are read
from the scripts with :mod:`ast`, following local modules and packages (``import infcore``
-> ``workflow/scripts/infcore/*.py``), and module names are mapped to distributions with
:func:`importlib.metadata.packages_distributions`.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

#: Modules a rule's script gets from Snakemake itself (its preamble puts Snakemake's own
#: site-packages at the end of ``sys.path``), not from the rule's environment.
PROVIDED_BY_SNAKEMAKE = {"snakemake"}

#: conda-forge names that differ from the PyPI distribution name.
CONDA_ALIASES = {
    "torch": {"pytorch", "pytorch-cpu", "pytorch-gpu"},
    "matplotlib": {"matplotlib-base"},
}

_RULE_RE = re.compile(r"^([ \t]*)(?:local)?(?:rule|checkpoint)\s+(\w+)\s*:", re.M)
_DIRECTIVE_RE = r"^\s+{name}:\s*(?:\n\s+)?(?:r|f)?([\"'])(.+?)\1"


@dataclass
class Rule:
    name: str
    smk: Path
    conda: Path | None = None
    script: Path | None = None
    has_shell: bool = False
    has_run: bool = False
    body: str = field(default="", repr=False)


_INCLUDE_RE = re.compile(r"^\s*include:\s*(?:\n\s+)?[rf]?([\"'])(.+?)\1", re.M)


def workflow_files(repo: Path = REPO) -> list[Path]:
    """The Snakefile and the files it includes (recursively), in include order; rule files
    that nothing includes are not part of the workflow."""
    files: list[Path] = []
    todo = [repo / "Snakefile"]
    while todo:
        f = todo.pop(0).resolve()
        if f in files or not f.is_file():
            continue
        files.append(f)
        todo += [f.parent / m.group(2) for m in _INCLUDE_RE.finditer(f.read_text())]
    return files


def parse_rules(repo: Path = REPO) -> dict[str, Rule]:
    """Every ``rule NAME:`` in the workflow, with its conda env and script resolved to
    absolute paths (Snakemake resolves both relative to the file that holds the rule)."""
    rules: dict[str, Rule] = {}
    for smk in workflow_files(repo):
        text = smk.read_text()
        for m in _RULE_RE.finditer(text):
            indent = len(m.group(1).expandtabs())
            # the rule ends at the next non-empty, non-comment line indented no deeper
            lines = text[m.end() :].split("\n")
            kept = [lines[0]]
            for line in lines[1:]:
                stripped = line.strip()
                if stripped and not stripped.startswith("#"):
                    if len(line) - len(line.lstrip()) <= indent:
                        break
                kept.append(line)
            body = "\n".join(kept)
            rule = Rule(name=m.group(2), smk=smk, body=body)
            for key in ("conda", "script"):
                d = re.search(_DIRECTIVE_RE.format(name=key), body, re.M)
                if d:
                    setattr(rule, key, (smk.parent / d.group(2)).resolve())
            rule.has_shell = re.search(r"^\s+shell:", body, re.M) is not None
            rule.has_run = re.search(r"^\s+run:", body, re.M) is not None
            rules[rule.name] = rule
    return rules


class _Scan(ast.NodeVisitor):
    """Imports and referenced names in a piece of code; imports inside ``try: ... except
    ImportError``, ``with contextlib.suppress(ImportError)`` or ``if TYPE_CHECKING:`` are
    optional and skipped."""

    def __init__(self):
        self.imports: list[ast.Import | ast.ImportFrom] = []
        self.names: set[str] = set()
        self.attrs: set[tuple[str, str]] = set()  # (name, attribute) for `name.attribute`
        self._optional = 0

    def scan(self, nodes) -> _Scan:
        for node in nodes if isinstance(nodes, list) else [nodes]:
            self.visit(node)
        return self

    def visit_Import(self, node):
        if not self._optional:
            self.imports.append(node)

    visit_ImportFrom = visit_Import

    def _guarded(self, body, rest):
        self._optional += 1
        for n in body:
            self.visit(n)
        self._optional -= 1
        for n in rest:
            self.visit(n)

    def visit_Try(self, node):
        catches = {
            n.id if isinstance(n, ast.Name) else getattr(n, "attr", "")
            for h in node.handlers
            for n in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])
            if n is not None
        }
        if catches & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}:
            self._guarded(node.body, node.handlers + node.orelse + node.finalbody)
        else:
            self.generic_visit(node)

    visit_TryStar = visit_Try

    def visit_With(self, node):
        suppress = any(
            isinstance(i.context_expr, ast.Call)
            and ast.unparse(i.context_expr.func).endswith("suppress")
            and any("ImportError" in ast.unparse(a) for a in i.context_expr.args)
            for i in node.items
        )
        if suppress:
            self._guarded(node.body, [i.context_expr for i in node.items])
        else:
            self.generic_visit(node)

    def visit_If(self, node):
        if "TYPE_CHECKING" in ast.unparse(node.test):
            self._guarded(node.body, node.orelse)
        else:
            self.generic_visit(node)

    def visit_Name(self, node):
        self.names.add(node.id)

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name):
            self.attrs.add((node.value.id, node.attr))
        self.generic_visit(node)


@dataclass
class _Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    defs: dict[str, ast.AST] = field(default_factory=dict)
    scope: dict[str, tuple] = field(default_factory=dict)


class ImportTracer:
    """Third-party modules a script needs, following local modules with some precision.

    A local module costs what its module-level code imports; one of its functions or
    classes costs what that code imports, only when something that runs uses it. So
    ``wfio.load_torch`` (which imports torch inside) makes a script need torch, while a
    plotting script that only calls ``wfio.save_json`` does not. Lazy package attributes
    (``infcore.plotting`` through ``__getattr__``) resolve to the submodule.
    """

    def __init__(self, roots: list[Path]):
        self.roots = roots
        self.modules: dict[str, _Module | None] = {}
        self.needed: dict[str, set[Path]] = {}
        self._done: set[tuple] = set()

    # -- locating modules --
    def module(self, dotted: str) -> _Module | None:
        if dotted not in self.modules:
            found = None
            parts = dotted.split(".")
            for root in self.roots:
                base = root.joinpath(*parts)
                if base.with_suffix(".py").is_file():
                    found = (base.with_suffix(".py"), False)
                elif (base / "__init__.py").is_file():
                    found = (base / "__init__.py", True)
                if found:
                    break
            if found:
                path, is_pkg = found
                tree = ast.parse(path.read_text(), filename=str(path))
                mod = _Module(dotted, path, is_pkg, tree)
                for node in tree.body:
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                        mod.defs[node.name] = node
                self.modules[dotted] = mod
            else:
                self.modules[dotted] = None
        return self.modules[dotted]

    def _absolute(self, mod: _Module, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        pkg = mod.name.split(".")
        if not mod.is_package:
            pkg = pkg[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
        return ".".join(pkg + ([node.module] if node.module else []))

    # -- the work list --
    def need_ext(self, dotted: str, where: Path):
        top = dotted.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__" or top in PROVIDED_BY_SNAKEMAKE:
            return
        self.needed.setdefault(top, set()).add(where)

    def bind_imports(self, mod: _Module, imports, scope: dict):
        """Run import statements: load local modules, record third-party ones, and fill
        ``scope`` with name -> ("mod", dotted) | ("attr", dotted, name)."""
        for node in imports:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if self.module(a.name.split(".")[0]) is None:
                        self.need_ext(a.name, mod.path)
                        continue
                    parts = a.name.split(".")
                    for i in range(1, len(parts) + 1):
                        self.load(".".join(parts[:i]))
                    scope[a.asname or parts[0]] = ("mod", a.name if a.asname else parts[0])
            else:
                base = self._absolute(mod, node)
                if self.module(base) is None:
                    self.need_ext(base, mod.path)
                    continue
                self.load(base)
                for a in node.names:
                    if a.name == "*":
                        continue
                    sub = f"{base}.{a.name}"
                    if self.module(sub) is not None:
                        self.load(sub)
                        scope[a.asname or a.name] = ("mod", sub)
                    else:
                        scope[a.asname or a.name] = ("attr", base, a.name)

    def load(self, dotted: str):
        key = ("load", dotted)
        if key in self._done:
            return
        self._done.add(key)
        mod = self.module(dotted)
        if mod is None:
            return
        if "." in dotted:
            self.load(dotted.rsplit(".", 1)[0])
        # module-level code: everything but function bodies (class bodies run, methods not)
        top: list[ast.AST] = []
        for node in mod.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                top += node.decorator_list + [node.args]
            elif isinstance(node, ast.ClassDef):
                top += (
                    node.decorator_list
                    + node.bases
                    + [
                        n
                        for n in node.body
                        if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                    ]
                )
            else:
                top.append(node)
        scan = _Scan().scan(top)
        self.bind_imports(mod, scan.imports, mod.scope)
        self.use_names(mod, scan, {})

    def use_names(self, mod: _Module, scan: _Scan, local: dict):
        for name, attr in scan.attrs:
            target = local.get(name) or mod.scope.get(name)
            if target and target[0] == "mod":
                self.use(target[1], attr)
        for name in scan.names:
            if name in local:
                target = local[name]
            elif name in mod.defs:
                self.use(mod.name, name)
                continue
            else:
                target = mod.scope.get(name)
            if target and target[0] == "attr":
                self.use(target[1], target[2])

    def use(self, dotted: str, name: str):
        """Something that runs uses ``dotted.name``."""
        key = ("use", dotted, name)
        if key in self._done:
            return
        self._done.add(key)
        self.load(dotted)
        mod = self.module(dotted)
        if mod is None:
            return
        if name in mod.defs:
            scan = _Scan().scan(mod.defs[name])
            local: dict = {}
            self.bind_imports(mod, scan.imports, local)
            self.use_names(mod, scan, local)
        elif name in mod.scope:
            target = mod.scope[name]
            if target[0] == "attr":
                self.use(target[1], target[2])
        elif self.module(f"{dotted}.{name}") is not None:
            self.load(f"{dotted}.{name}")

    def trace_script(self, script: Path) -> dict[str, set[Path]]:
        """A rule script runs top to bottom: everything in it counts."""
        name = script.stem
        mod = self.module(name)
        assert mod is not None and mod.path == script, script
        self.load(name)
        for d in mod.defs:
            self.use(name, d)
        return self.needed


def third_party_imports(script: Path) -> dict[str, set[Path]]:
    """Third-party top-level modules that ``script`` needs when it runs, directly or
    through the local modules next to it, mapped to the files that import them."""
    return ImportTracer([script.parent]).trace_script(script)


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distributions_for(module: str) -> set[str]:
    """PyPI distribution names (normalised) that provide top-level ``module``, as
    installed here; falls back to the module name itself."""
    dists = _packages_distributions().get(module) or [module]
    return {normalise(d) for d in dists}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class EnvSpec:
    path: Path
    channels: list[str]
    #: normalised package name -> (source, version spec string) with source "conda"/"pip"
    packages: dict[str, tuple[str, str]]


_SPEC_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*?)\s*$")


def parse_env(path: Path) -> EnvSpec:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "dependencies" not in data:
        raise ValueError(f"{path}: not a conda environment file (no 'dependencies')")
    packages: dict[str, tuple[str, str]] = {}
    for dep in data["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep.get("pip", []):
                m = _SPEC_RE.match(spec)
                packages[normalise(m.group(1))] = ("pip", m.group(2))
        else:
            spec = str(dep).split("::")[-1]  # channel::name=ver
            m = _SPEC_RE.match(spec.replace(" ", ""))
            packages[normalise(m.group(1))] = ("conda", m.group(2))
    return EnvSpec(path=path, channels=list(data.get("channels", [])), packages=packages)


def pinned_version(spec: str, source: str) -> str | None:
    """The exact version a spec pins, or None if it does not pin one.

    conda: ``=1.2.3`` (means 1.2.3.*), ``==1.2.3``, ``1.2.3``; pip: ``==1.2.3``."""
    spec = spec.strip()
    if source == "pip":
        m = re.fullmatch(r"==\s*([0-9][0-9A-Za-z.+!]*)", spec)
    else:
        m = re.fullmatch(r"={1,2}\s*([0-9][0-9A-Za-z.+!]*?)(?:\.\*)?(?:=\S+)?", spec)
    return m.group(1) if m else None


def env_provides(env: EnvSpec, module: str) -> str | None:
    """The env's package name that provides ``module``, or None."""
    for dist in distributions_for(module):
        for name in {dist} | CONDA_ALIASES.get(dist, set()):
            if name in env.packages:
                return name
    return None


def pypi_name(conda_name: str) -> str:
    for pypi, aliases in CONDA_ALIASES.items():
        if conda_name in aliases:
            return pypi
    return conda_name


def read_requirements(path: Path) -> dict[str, str]:
    """requirements.txt -> {normalised name: specifier string}."""
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = _SPEC_RE.match(line)
        reqs[normalise(m.group(1))] = m.group(2).split(";")[0].strip()
    return reqs
