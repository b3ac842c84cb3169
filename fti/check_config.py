"""Check an agent or hub configuration file the way the service would load it.

``fti check-config FILE`` runs the same loader as ``fti agent run`` or ``fti hub serve``, so a
file that passes here starts the service, and a file that fails names its file, line, key,
value and the fix. Nothing is opened besides the file itself: no log source, database or hub.

Two checks run before the loader, because they must give a precise place even when the file
is not in the expected shape:

- A tab in a line's indentation is reported with its line and column. YAML forbids tabs
  there, and PyYAML's own scanner error is hard to read.
- A list item that YAML 1.1 reads as a boolean, number, date or null (``- no`` becomes
  ``False``) is reported with its index and line and a fix that quotes it. Every list in both
  schemas holds strings or mappings, so such an item is always a mistake.

The kind of file is taken from its top-level keys: ``site``, ``sources``, ``state_dir``,
``windows``, ``detector``, ``privacy`` and ``alerts`` belong to the agent; ``storage``,
``auth``, ``rounds``, ``fusion``, ``siem`` and ``secure`` belong to the hub; ``hub`` is in both. The
caller passes ``kind`` when a file has none of them or keys of both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.config import load_agent_config
from agent.errors import ConfigError
from fusion_hub.config import load_hub_config
from fusion_hub.errors import HubConfigError

KINDS = ("agent", "hub")
AGENT_ONLY_KEYS = frozenset({"site", "sources", "state_dir", "windows", "detector", "privacy", "alerts"})
HUB_ONLY_KEYS = frozenset({"storage", "auth", "rounds", "fusion", "siem", "secure"})

# A configuration file is a few kilobytes, so a bigger one is a mistake. PyYAML's pure-Python
# scanner would take minutes over hundreds of megabytes.
MAX_CONFIG_BYTES = 1024 * 1024
# Both schemas nest only a few levels, and the composer recurses once per level.
MAX_NESTING_DEPTH = 32
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"

_TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*:")
_STRING_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class ConfigProblem:
    """One reason a configuration file cannot be used, with its place in the file.

    ``line`` and ``column`` are 1-based and None when unknown (a missing key has no line).
    ``key`` is the dotted key (``site.internal_domains[1]``) or None for file-level problems.
    """

    path: Path
    line: int | None
    column: int | None
    key: str | None
    value: Any
    message: str

    def __str__(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        subject = ""
        if self.key:
            subject = f"{self.key}: " if self.value is None else f"{self.key} = {self.value!r}: "
        return f"{where}: {subject}{self.message}"


@dataclass(frozen=True)
class CheckResult:
    """Outcome of checking one file: its kind and the first problem found, if any."""

    path: Path
    kind: str
    problem: ConfigProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


class ConfigKindUnknown(Exception):
    """The file's top-level keys do not tell an agent configuration from a hub one."""

    def __init__(self, path: Path, keys: list[str]) -> None:
        self.path, self.keys = path, keys
        found = ", ".join(keys) if keys else "no top-level keys"
        super().__init__(
            f"{path}: cannot tell an agent configuration from a hub one (found {found}); "
            "pass --kind agent or --kind hub"
        )


def detect_kind(path: Path, text: str) -> str:
    """Return ``"agent"`` or ``"hub"`` from the file's top-level keys.

    The keys are read line by line rather than parsed, so a file with a duplicate key or a
    tab still gets a kind and then its precise error.

    Raises
    ------
    ConfigKindUnknown
        If the keys belong to neither kind or to both.
    """
    keys = [m.group(1) for line in text.splitlines() if (m := _TOP_LEVEL_KEY.match(line))]
    agent_hits = AGENT_ONLY_KEYS.intersection(keys)
    hub_hits = HUB_ONLY_KEYS.intersection(keys)
    if agent_hits and not hub_hits:
        return "agent"
    if hub_hits and not agent_hits:
        return "hub"
    # A file with only a hub section can only be a hub configuration: the agent's
    # configuration requires site, sources and state_dir.
    if not agent_hits and not hub_hits and set(keys) == {"hub"}:
        return "hub"
    raise ConfigKindUnknown(path, keys)


def check_config_file(path: Path, *, kind: str | None = None) -> CheckResult:
    """Check one configuration file and return its kind and first problem.

    Parameters
    ----------
    path : Path
        The YAML file.
    kind : {"agent", "hub"} or None, default None
        The kind of configuration; None detects it with :func:`detect_kind`.

    Raises
    ------
    ConfigKindUnknown
        If ``kind`` is None and the file's kind cannot be detected.
    OSError
        If the file cannot be read.
    ValueError
        If ``kind`` is not one of :data:`KINDS`.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    problem, text = _read_text(path)
    if problem is not None:
        return CheckResult(path, kind or "unknown", problem)

    # Tabs first: the YAML scanner would stop at them with a less precise message.
    problem = find_tab_indentation(path, text)
    if problem is not None:
        return CheckResult(path, kind or _detect_or_unknown(path, text), problem)

    kind = kind or detect_kind(path, text)
    problem = find_aliases_or_deep_nesting(path, text)
    if problem is None:
        problem = find_implicit_list_items(path, text)
    if problem is None:
        problem = _load(path, kind)
    return CheckResult(path, kind, problem)


def _read_text(path: Path) -> tuple[ConfigProblem | None, str]:
    """Return the file's text, or the problem that keeps it from being read as a configuration."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        return ConfigProblem(
            path, None, None, None, None,
            f"the file has {size} bytes, more than the {MAX_CONFIG_BYTES} a configuration may have; "
            "check that this is the right file",
        ), ""
    data = path.read_bytes()
    try:
        return None, data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return ConfigProblem(
            path, line, None, None, None,
            f"byte 0x{data[err.start]:02x} is not valid UTF-8; save the file as UTF-8",
        ), ""


def find_aliases_or_deep_nesting(path: Path, text: str) -> ConfigProblem | None:
    """Return the first alias or over-deep collection, or None.

    No setting needs an alias, and expanding nested aliases grows exponentially ("billion
    laughs"). Events are read without recursion, so a deep file cannot exhaust the stack.
    A syntax error is left to the loader, which reports it with its own line.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                return ConfigProblem(
                    path, event.start_mark.line + 1, event.start_mark.column + 1, None, None,
                    "aliases are not supported in a configuration; write the value out",
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING_DEPTH:
                    return ConfigProblem(
                        path, event.start_mark.line + 1, event.start_mark.column + 1, None, None,
                        f"lists and mappings nest more than {MAX_NESTING_DEPTH} levels deep; "
                        "no setting needs that many",
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None
    return None


def find_tab_indentation(path: Path, text: str) -> ConfigProblem | None:
    """Return the first line whose indentation contains a tab, or None."""
    for number, line in enumerate(text.splitlines(), start=1):
        indentation = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indentation:
            return ConfigProblem(
                path, number, indentation.index("\t") + 1, None, None,
                "a tab is used for indentation, which YAML does not allow; indent with spaces",
            )
    return None


def find_implicit_list_items(path: Path, text: str) -> ConfigProblem | None:
    """Return the first unquoted list item that YAML does not read as a string, or None.

    A syntax error is left to the loader, which reports it with its own line.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if root is None:
        return None
    return _scan_node(path, root, "")


def _scan_node(path: Path, node: Node, key: str) -> ConfigProblem | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            child = f"{key}.{key_node.value}" if key else str(key_node.value)
            problem = _find_sexagesimal(path, value_node, child)
            if problem is not None:
                return problem
            problem = _scan_node(path, value_node, child)
            if problem is not None:
                return problem
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            item_key = f"{key}[{index}]"
            if isinstance(item, ScalarNode) and item.tag != _STRING_TAG and item.style is None:
                value = _construct(item)
                if value is _UNREADABLE:
                    # The loader of the kind reports it without repeating the text.
                    return None
                type_name = "null" if value is None else type(value).__name__
                if _is_secret(key):
                    return ConfigProblem(
                        path, item.start_mark.line + 1, item.start_mark.column + 1, item_key,
                        None, f"YAML 1.1 reads this unquoted item as {type_name}, but this list "
                              "holds strings; quote it")
                return ConfigProblem(
                    path, item.start_mark.line + 1, item.start_mark.column + 1, item_key, value,
                    f"YAML 1.1 reads the unquoted {item.value!r} as {type_name}, but this "
                    f"list holds strings; quote it: \"{item.value}\"",
                )
            problem = _scan_node(path, item, item_key)
            if problem is not None:
                return problem
    return None


def _find_sexagesimal(path: Path, node: Node, key: str) -> ConfigProblem | None:
    """Return a problem for an unquoted base-60 number such as ``1:30``, or None.

    YAML 1.1 reads ``1:30`` as 90 and ``1:00:00`` as 3600, so a time or port written with a
    colon silently becomes another number.
    """
    if not (isinstance(node, ScalarNode) and node.style is None and ":" in node.value
            and node.tag in (_INT_TAG, _FLOAT_TAG)):
        return None
    value = _construct(node)
    if value is _UNREADABLE:
        # An explicit tag on other text, such as "!!float a:b". The loader of the kind
        # reports it without repeating the text, which may be a secret.
        return None
    if _is_secret(key):
        return ConfigProblem(
            path, node.start_mark.line + 1, node.start_mark.column + 1, key, None,
            "YAML 1.1 reads this unquoted value with ':' as a base-60 number; quote it")
    return ConfigProblem(
        path, node.start_mark.line + 1, node.start_mark.column + 1, key, node.value,
        f"YAML 1.1 reads the unquoted {node.value!r} as the base-60 number {value}; "
        f"write {value} if that is meant, or quote it if it is text",
    )


# Returned by ``_construct`` for a scalar that PyYAML cannot build.
_UNREADABLE = object()
# Keys whose values the checks never repeat, as their last dotted part.
_SECRET_KEYS = ("password", "postgresql_dsn")


def _construct(node: ScalarNode) -> Any:
    """Return the value PyYAML builds for ``node``, or ``_UNREADABLE``."""
    try:
        return yaml.SafeLoader("").construct_object(node)
    except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return _UNREADABLE


def _is_secret(key: str) -> bool:
    """Return whether ``key``, a dotted key perhaps ending in ``[index]``, names a secret."""
    return key.split("[", 1)[0].rsplit(".", 1)[-1] in _SECRET_KEYS


def _detect_or_unknown(path: Path, text: str) -> str:
    try:
        return detect_kind(path, text)
    except ConfigKindUnknown:
        return "unknown"


def _load(path: Path, kind: str) -> ConfigProblem | None:
    """Run the service's own loader and translate its error into a :class:`ConfigProblem`."""
    if kind == "agent":
        try:
            load_agent_config(path)
        except ConfigError as err:
            return ConfigProblem(path, err.line or None, None, err.key or None, err.value, err.fix)
        return None
    try:
        load_hub_config(path)
    except HubConfigError as err:
        return ConfigProblem(path, err.line, None, err.key, err.value, f"{err.problem}. {err.fix}")
    return None
