#!/usr/bin/env python3
"""Moves every reference to the repository's ``bridge`` and ``workers`` packages under the
one top-level name ``mcp_celery_bridge`` (issue 12, item 6): ``from bridge.x import y``
becomes ``from mcp_celery_bridge.bridge.x import y``, ``"workers.examples"`` becomes
``"mcp_celery_bridge.workers.examples"``, ``celery -A workers`` becomes
``celery -A mcp_celery_bridge.workers``. The directories stay where they are.

Deterministic and idempotent: run it again on a tree that gained new files or imports
(``python3 scripts/rename-imports.py``; ``--check`` only lists what it would change and
exits 1 if anything). It then runs ruff (import order, line lengths) on the Python files it
changed, when ruff is in .venv/bin or on PATH.

What it changes, in Python files (found by tokens and the syntax tree, never in comments or
docstrings, which keep the short names of the repository's layout):
- absolute imports of ``bridge``/``workers`` (``import bridge.x`` without ``as`` only when
  the file does not use the bound name ``bridge``: it stops otherwise, to be fixed by hand);
- string literals that name one of their modules or packages (``"bridge.cli"``,
  ``"bridge.shared"``, ``"workers.examples"``, ``"bridge.eras."``, ``"bridge."``), or a
  top-level name of one of their modules (``"workers.tools.tool"``, ``"a.b:c"``); except the
  explicit logger names (``getLogger("bridge.requests")``), which are channels, not modules;
- ``"workers"`` as a Celery app: after ``"-A",`` or as the value of ``app``.
In Markdown, Dockerfile, compose, shell and TOML files: ``-A workers``, ``-m bridge.cli``,
``from bridge|workers... import``, ``import workers.x`` and module paths written as
``workers.examples`` or ``"workers.integration"``.
What it leaves, and prints for a look by hand: other bare ``"bridge"``/``"workers"`` literals
(a JSON key, a process name) and f-strings naming a module.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = "mcp_celery_bridge"
OLD = ("bridge", "workers")
SKIP_DIRS = {".git", ".venv", ".venv-modern", ".conformance", "build", "dist", TOP}
TEXT_SUFFIXES = {".md", ".yml", ".yaml", ".toml", ".cfg", ".sh", ".conf"}
TEXT_NAMES = {"Dockerfile", "run", "dev", "test", "bootstrap"}
#: A file holding this line is left alone (a test whose short names are a project's own).
SKIP_MARK = "# rename-imports: skip"
DOTTED = re.compile(r"^(bridge|workers)((?:\.[A-Za-z_]\w*)*)(\.?)(?::([A-Za-z_]\w*))?$")


def modules() -> set[str]:
    """The dotted names of every module and package under bridge/ and workers/."""
    found: set[str] = set()
    for top in OLD:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.add(".".join(parts))
    return found


def top_level_names(module: str) -> set[str]:
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        return set()
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def logger_names() -> set[str]:
    """The literal names given to ``logging.getLogger`` in bridge/ and workers/."""
    names: set[str] = set()
    for top in OLD:
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute | ast.Name)
                    and getattr(node.func, "attr", getattr(node.func, "id", "")) == "getLogger"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    names.add(node.args[0].value)
    return names


def exports() -> set[str]:
    """The names ``mcp_celery_bridge`` itself serves (its ``__all__``)."""
    for node in ast.parse((ROOT / TOP / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


class Renamer:
    def __init__(self) -> None:
        self.modules = modules()
        self.exports = exports()
        self.loggers = logger_names()
        self.review: list[str] = []

    def names_ours(self, value: str) -> str | None:
        """``value`` with the new prefix, when it is a dotted name of ours, else None."""
        if value in self.loggers:
            return None
        if "," in value:  # a list of modules, as MCP_BRIDGE_TOOL_MODULES takes them
            parts = value.split(",")
            new = [self.names_ours(p) for p in parts]
            if any(new):
                return ",".join(n or p for n, p in zip(new, parts, strict=True))
            return None
        match = DOTTED.match(value)
        if not match:
            return None
        top, rest, dot, attr = match.groups()
        path = top + rest
        if not rest and not dot:
            return None  # a bare "bridge"/"workers": see the app rules
        if path in self.modules:
            pass
        elif not dot and "." in path and not attr:
            module, _, name = path.rpartition(".")
            if module not in self.modules or name not in top_level_names(module):
                return None
        else:
            return None
        if attr and attr not in top_level_names(path):
            return None
        return f"{TOP}.{value}"

    # Python -----------------------------------------------------------------------------

    def python(self, path: Path, source: str) -> str:
        lines = source.splitlines(keepends=True)
        edits: list[tuple[int, int, int, str]] = []  # (row, col, end col, text), 1-based rows
        tree = ast.parse(source)
        bound_used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in OLD}
        inside = path.relative_to(ROOT).parts[0] in OLD
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] in OLD:
                    # Outside the package, the public spelling: `from mcp_celery_bridge
                    # import tool` for what the top-level package serves.
                    public = not inside and self.public(node.module, node.names)
                    new = TOP if public else None
                    edits.append(self._module_edit(lines, node, "from", node.module, new))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] not in OLD:
                        continue
                    if alias.asname is None and alias.name.split(".")[0] in bound_used:
                        raise SystemExit(
                            f"{path}:{node.lineno}: `import {alias.name}` binds a name the "
                            "file uses: rewrite it by hand, then run this again"
                        )
                    edits.append(self._module_edit(lines, node, "import", alias.name))
        edits += self._strings(path, source)
        for row, col, end, text in sorted(edits, reverse=True):
            line = lines[row - 1]
            lines[row - 1] = line[:col] + text + line[end:]
        return "".join(lines)

    def public(self, module: str, names: list[ast.alias]) -> bool:
        return module == "workers" and all(
            a.asname is None and a.name in self.exports for a in names
        )

    def _module_edit(
        self, lines: list[str], node: ast.stmt, keyword: str, module: str, new: str | None = None
    ) -> tuple[int, int, int, str]:
        # The module name is on the statement's first line unless the statement is
        # `import (a,\n b)`-like, which Python does not allow for `import`: search from
        # the statement's start for the name as a whole word.
        for row in range(node.lineno, (node.end_lineno or node.lineno) + 1):
            line = lines[row - 1]
            start = node.col_offset if row == node.lineno else 0
            found = re.compile(rf"(?<![\w.]){re.escape(module)}(?![\w.])").search(line, start)
            if found:
                return (row, found.start(), found.end(), new or f"{TOP}.{module}")
        raise SystemExit(f"cannot find {module!r} in the {keyword} at line {node.lineno}")

    def _strings(self, path: Path, source: str) -> list[tuple[int, int, int, str]]:
        edits = []
        significant: list[tokenize.TokenInfo] = []
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
                continue
            if token.type == tokenize.STRING and token.start[0] == token.end[0]:
                edit = self._string(path, token, significant[-4:])
                if edit:
                    edits.append(edit)
            elif token.type == getattr(tokenize, "FSTRING_MIDDLE", -1) and re.search(
                r"(?<![\w.])(bridge|workers)\.\w", token.string
            ):
                self.review.append(f"{path}:{token.start[0]}: f-string: {token.string!r}")
            significant.append(token)
        return edits

    def _string(
        self, path: Path, token: tokenize.TokenInfo, before: list[tokenize.TokenInfo]
    ) -> tuple[int, int, int, str] | None:
        match = re.fullmatch(r"([rRuU]?)(['\"])(.*)\2", token.string, re.S)
        if not match:
            # bytes, triple quotes, f-strings (one token before Python 3.12)
            if re.search(r"(?<![\w.])(bridge|workers)\.\w", token.string):
                self.review.append(f"{path}:{token.start[0]}: {token.string}")
            return None
        prefix, quote, value = match.groups()
        new = self.names_ours(value)
        if new is None and value == "workers":
            words = [t.string for t in before]
            after_a = words[-2:] == ['"-A"', ","] or words[-2:] == ["'-A'", ","]
            app_value = words[-2:] == ["app", "="] or words[-4:] == ["app", ":", "str", "="]
            if after_a or app_value or words[-2:] == ["app", "=="]:
                new = f"{TOP}.workers"
            else:
                self.review.append(f"{path}:{token.start[0]}: {token.string}")
        elif new is None and value == "bridge":
            self.review.append(f"{path}:{token.start[0]}: {token.string}")
        if new is None:
            return None
        row, col = token.start
        return (row, col, token.end[1], f"{prefix}{quote}{new}{quote}")

    # Other text -------------------------------------------------------------------------

    def text(self, source: str) -> str:
        # The settings reference in docs/operations.md is generated from the settings'
        # docstrings: regenerate it instead.
        head, begin, rest = source.partition("<!-- settings:begin")
        if begin:
            generated, end, tail = rest.partition("<!-- settings:end")
            return self.text(head) + begin + generated + end + self.text(tail)

        def dotted(match: re.Match[str]) -> str:
            new = self.names_ours(match.group(0))
            return new if new is not None else match.group(0)

        def public(match: re.Match[str]) -> str:
            names = [n.strip() for n in match.group(2).split(",")]
            if all(n in self.exports for n in names):
                return f"from {TOP} import {match.group(2)}"
            return match.group(0)

        source = re.sub(r"(?<![\w.])from (workers) import ([\w, ]+)$", public, source, flags=re.M)
        source = re.sub(r"(-A[ \"',]+)workers\b(?![\w.])", rf"\1{TOP}.workers", source)
        source = re.sub(r"(?<![\w.])(bridge|workers)(\.[A-Za-z_]\w*)+", dotted, source)
        source = re.sub(r"(?<![\w.])(from|import) (bridge|workers)\b", rf"\1 {TOP}.\2", source)
        return source


def files() -> list[Path]:
    found = []
    stack = [ROOT]
    while stack:
        folder = stack.pop()
        for entry in sorted(folder.iterdir()):
            if entry.is_symlink():
                continue  # mcp_celery_bridge/bridge and the venvs: their files are elsewhere
            if entry.is_dir():
                if entry.name not in SKIP_DIRS and not entry.name.startswith("."):
                    stack.append(entry)
                elif entry.name == ".ci":
                    stack.append(entry)
            elif (
                entry.suffix == ".py" or entry.suffix in TEXT_SUFFIXES or (entry.name in TEXT_NAMES)
            ):
                found.append(entry)
    return sorted(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list, change nothing")
    args = parser.parse_args()
    renamer = Renamer()
    me = Path(__file__).resolve()
    changed: list[Path] = []
    for path in files():
        if path == me or path.name in ("CHANGELOG.md", "RESULTS.md"):  # records of the past
            continue
        source = path.read_text()
        if SKIP_MARK in source:
            continue
        new = renamer.python(path, source) if path.suffix == ".py" else renamer.text(source)
        if new != source:
            changed.append(path)
            if not args.check:
                path.write_text(new)
    for path in changed:
        print(f"changed: {path.relative_to(ROOT)}")
    python = [str(p) for p in changed if p.suffix == ".py"]
    ruff = ROOT / ".venv" / "bin" / "ruff"
    ruff_cmd = str(ruff) if ruff.exists() else shutil.which("ruff")
    if python and not args.check and ruff_cmd:
        subprocess.run([ruff_cmd, "check", "-q", "--fix", "--select", "I", *python], check=False)
        subprocess.run([ruff_cmd, "format", "-q", *python], check=False)
    for line in renamer.review:
        print(f"look at: {line}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
