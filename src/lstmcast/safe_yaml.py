r"""Reading YAML a user wrote without letting it hang, exhaust memory or echo megabytes (FAULTS C5).

>>> load_yaml("a: &x [1, 2]\nb: *x", "demo")
{'a': [1, 2], 'b': [1, 2]}
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from lstmcast.errors import ConfigError, cut, short

MAX_YAML_BYTES = 1_000_000  # a config is a few KB; a bigger file is not a config
MAX_YAML_NODES = 100_000  # values after alias expansion: a 1 KB alias bomb expands to billions


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Nodes ``node`` stands for once every alias is expanded (what pydantic and deepcopy would walk)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ConfigError("an alias refers to a node that contains it (a recursive structure): a config is a "
                          "tree; write the values out")
    active.add(key)
    children: list[Any] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(_expanded_size(child, memo, active) for child in children)
    active.discard(key)
    memo[key] = size
    return size


def _refuse_duplicate_keys(node: yaml.Node, where: str) -> None:
    """A key given twice in one mapping: YAML keeps the last silently, so a second ``data:`` section would drop
    every setting of the first. Refused at any depth, naming the key (dotted path) and both lines."""
    stack: list[tuple[yaml.Node, str]] = [(node, "")]
    seen: set[int] = set()  # an alias shares its node: walk it once (the size check bounded the graph)
    while stack:
        current, path = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            stack += [(child, path) for child in current.value]
        if not isinstance(current, yaml.MappingNode):
            continue
        lines: dict[str, int] = {}
        for key, value in current.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name != "<<":  # '<<' is the merge key: its values are merged, not replaced
                dotted = f"{path}.{name}" if path else name
                if name in lines:
                    raise ConfigError(f"{where}: key {cut(dotted)!r} appears twice (lines {lines[name]} and "
                                      f"{key.start_mark.line + 1}); YAML would keep only the second and drop the "
                                      "first silently: merge them into one")
                lines[name] = key.start_mark.line + 1
            stack.append((value, f"{path}.{name}" if path and name is not None else (name or path)))


def load_yaml(text: str, where: str) -> Any:
    """Parse YAML text, refusing in milliseconds what would take minutes and gigabytes (FAULTS C5).

    A 1 KB file of nested aliases ("billion laughs") expands to billions of nodes: the composed node graph
    is measured before anything is built. Integers beyond Python's 4300-digit limit, impossible dates and
    nesting deeper than the interpreter's stack become a ConfigError; a YAMLError (syntax) passes through.
    """
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: {len(text)} characters; a config is at most {MAX_YAML_BYTES} bytes")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_YAML_NODES:
            raise ConfigError(f"{where}: its aliases (*name) expand to {short(size)} values, over the limit of "
                              f"{MAX_YAML_NODES}: this looks like a YAML alias bomb; write the values out")
        _refuse_duplicate_keys(node, where)
        return loader.construct_document(node)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a config") from None
    except (ValueError, OverflowError) as exc:  # int('9' * 5000), date 2024-13-45
        if "integer string conversion" in str(exc):
            raise ConfigError(f"{where}: an integer has more than 4300 digits; no setting needs one") from None
        raise ConfigError(f"{where}: a value cannot be read: {cut(str(exc), 200)}") from None
    finally:
        loader.dispose()


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist: check the path given to -c") from None
    except OSError as exc:  # permission denied on a folder, a loop of links, a name too long
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):  # R14: a folder or /dev/zero exists; a FIFO would block the read forever
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or socket)"
        raise ConfigError(f"config file {str(p)!r} is {kind}: give -c the path of a YAML file")
    try:
        with p.open("rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_YAML_BYTES} bytes; a config is a few KB of YAML: check the "
                          "path given to -c")
    try:
        raw = load_yaml(data.decode("utf-8"), str(p))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {cut(str(getattr(exc, 'problem', exc)), 200)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file; a config is YAML text") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (data:, model:, train:)")
    return raw


def yaml_load_bytes(data: bytes) -> dict[str, Any]:
    """Parse YAML bytes from a run folder into a mapping (errors become ConfigError)."""
    try:
        raw = load_yaml(data.decode("utf-8"), "config.yaml")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid YAML: {cut(str(exc), 200)}") from None
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping of sections")
    return raw
