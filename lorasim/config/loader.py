"""YAML -> overrides -> validated :class:`Scenario`, with one-line errors naming the field, file and line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml
from pydantic import ValidationError

from lorasim.config.scenario import Scenario
from lorasim.errors import ConfigError


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number (best effort)."""
    out: dict[tuple, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return out

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                out[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                out[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (YAML would silently keep the last)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML scalars/lists) to a nested dict in place.

    Raises:
        ConfigError: an override without ``=``, or a path through a non-mapping.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key in the path")
        node = data
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = _parse_value(raw)
    return data


def _clean_loc(loc: tuple, data: Any, model_error: bool = False) -> tuple:
    """Drop pydantic's union-tag and wrapper components from an error location, keeping the user's key path.

    ``model_error``: the error comes from a model-level validator, so a last component the user did not write is a
    union tag (e.g. the default stream kind), not a missing key.
    """
    out = []
    node = data
    skip_next = False
    for i, c in enumerate(loc):
        if skip_next:
            skip_next = False
            continue
        if c == "streams" and isinstance(node, Mapping) and "streams" not in node:
            skip_next = True  # the single-stream shorthand: workload keys written without `streams: [...]`
            continue
        if isinstance(node, Mapping) and c not in node:
            is_tag = c in (node.get("kind"), node.get("name"), node.get("dist"))
            if is_tag or (i + 1 < len(loc) and loc[i + 1] in node) or (isinstance(c, str) and "[" in c):
                continue
            if model_error and i + 1 == len(loc):
                continue
        out.append(c)
        if isinstance(node, Mapping):
            node = node.get(c)
        elif isinstance(node, list) and isinstance(c, int) and c < len(node):
            node = node[c]
        else:
            node = None
    return tuple(out)


def format_validation_error(exc: ValidationError, data: Any, source: str | None, lines: dict[tuple, int],
                            overridden: Iterable[str] = ()) -> str:
    """One line: ``file:line: key.path: message`` (+ how many more errors); ``--set key.path: ...`` when the value
    came from an override."""
    errs = exc.errors()
    err = errs[0]
    loc = _clean_loc(tuple(err["loc"]), data, model_error=err["type"] == "value_error")
    path = ".".join(str(x) for x in loc) or "(scenario)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] not in ("extra_forbidden", "missing") and "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    hits = [key for key in overridden if path == key or path.startswith(key + ".") or key.startswith(path + ".")]
    if hits:  # the override the message names (a policy knob checked by its policy), else the first that matches
        key = next((k for k in hits if f"'{k.rsplit('.', 1)[-1]}'" in msg), hits[0])
        return f"--set {key}: {msg}" + (f" (and {len(errs) - 1} more)" if len(errs) > 1 else "")
    line = None
    for k in range(len(loc), 0, -1):
        if loc[:k] in lines:
            line = lines[loc[:k]]
            break
    where = f"{source}:{line}: " if source and line else (f"{source}: " if source else "")
    more = f" (and {len(errs) - 1} more error{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return f"{where}{path}: {msg}{more}"


def load_scenario(source: str | Path | Mapping | None = None, overrides: Sequence[str] = (),
                  seed: int | None = None) -> Scenario:
    """Load and validate a scenario.

    Args:
        source: a YAML file path, an already-parsed mapping, a :class:`Scenario` (to derive a what-if from it,
            re-validated), or None for the embedded default scenario.
        overrides: ``key.path=value`` strings applied before validation (the CLI's ``--set``).
        seed: replaces ``seed`` when given.

    Returns:
        The validated, frozen scenario.

    Raises:
        ConfigError: unreadable file, YAML syntax error (with line), unknown key, wrong type, out-of-range or
            contradictory value (with the dotted field path).
    """
    text = None
    name = None
    if source is None:
        from lorasim.scenarios import default_scenario_path

        source = default_scenario_path()
    if isinstance(source, Scenario):
        data = source.model_dump(mode="json")
    elif isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    else:
        path = Path(source)
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: scenario file not found") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read scenario ({exc.strerror})") from None
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{where}: invalid YAML: {problem}") from None
        if data is None:
            raise ConfigError(f"{path}: the scenario is empty (run `lorasim run` without a scenario for the "
                              f"embedded default, or start from `lorasim show`)")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a scenario must be a mapping of sections, got {type(data).__name__}")
    data = apply_overrides(data, overrides)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**63 - 1:
            raise ConfigError(f"--seed {seed!r}: the root seed must be an integer in [0, 2**63 - 1]")
        data["seed"] = seed
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        keys = [o.partition("=")[0].strip() for o in overrides]
        raise ConfigError(format_validation_error(exc, data, name, _key_lines(text) if text else {}, keys)) from None


def scenario_to_yaml(scenario: Scenario) -> str:
    """The resolved scenario (every default filled in) as YAML."""
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
