"""A Python config file as data (mmengine's `Config.pretty_text`, which mmseg checkpoints carry): parsed with
Python's own parser, evaluated only where it is plain data — numbers, strings, booleans, None, lists,
tuples, dicts and `dict(key=value, ...)` calls. Nothing of the text is executed. A top-level value that is
anything else (a lambda, a name, an expression) is kept as `Unreadable`: it is an error only where it is
needed (`value` names the key and the line).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError

MAX_TEXT = 4 << 20  # characters of config text
MAX_NODES = 200_000  # syntax-tree nodes evaluated in all


@dataclass(frozen=True)
class Unreadable:
    """A config value that is not plain data (where it stands in the text)."""

    line: int
    kind: str


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_NODES

    def take(self, node: ast.AST) -> None:
        self.left -= 1
        if self.left < 0:
            raise _NotData(node, "too large")


class _NotData(Exception):
    def __init__(self, node: ast.AST, kind: str) -> None:
        super().__init__(kind)
        self.node, self.kind = node, kind


def parse(text: str, where: str) -> dict[str, Any]:
    """The top-level assignments `name = value` of a config text, each value plain data or `Unreadable`."""
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{where}: the config text is {len(text):,} characters (at most {MAX_TEXT:,} are read)")
    try:
        tree = ast.parse(text, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ConfigError(f"{where}: the config text does not parse as Python ({type(e).__name__})") from None
    out: dict[str, Any] = {}
    budget = _Budget()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            try:
                out[name] = _data(stmt.value, budget)
            except _NotData as e:
                out[name] = Unreadable(getattr(e.node, "lineno", stmt.lineno), e.kind)
            except RecursionError:
                out[name] = Unreadable(stmt.lineno, "nested too deeply")
    return out


def _data(node: ast.AST, budget: _Budget) -> Any:
    budget.take(node)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _data(node.operand, budget)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.List):
        return [_data(e, budget) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_data(e, budget) for e in node.elts)
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        keys = [_data(k, budget) for k in node.keys if k is not None]
        if all(isinstance(k, (str, int)) for k in keys):
            return dict(zip(keys, (_data(v, budget) for v in node.values), strict=True))
    call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
    if call and isinstance(node, ast.Call) and not node.args and all(k.arg is not None for k in node.keywords):
        return {str(k.arg): _data(k.value, budget) for k in node.keywords}
    raise _NotData(node, type(node).__name__)


def value(cfg: dict[str, Any], path: str, where: str, default: Any = None) -> Any:
    """`cfg["a"]["b"]` for path "a.b" (default when a part is missing); an `Unreadable` there is an error
    that names the key."""
    v: Any = cfg
    for part in path.split("."):
        if isinstance(v, Unreadable):
            break
        if not isinstance(v, dict) or part not in v:
            return default
        v = v[part]
    if isinstance(v, Unreadable):
        raise ConfigError(
            f"{where}: the checkpoint's config holds `{path}` as code, not data ({v.kind} at line {v.line})",
            hint="convert with --arch NAME (a registry entry that describes the network)",
        )
    return v
