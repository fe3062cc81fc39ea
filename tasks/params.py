"""Plain-data helpers behind ``TrainConfig``: YAML with ``a.b.c=value`` overrides, and flat MLflow params.

Flat params are how a config survives in MLflow and comes back for ``reproduce``: every leaf becomes one
``prefix + dotted.path -> text`` param, and :func:`unflatten` is its exact inverse. Text that would read
back as something else (the string ``"10"``, ``"true"``, ``"null"``) is stored JSON-quoted; every other
string is stored as it is so that the MLflow UI stays readable.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, minus two surprises for configs.

    ``1e-3`` is a float (PyYAML reads it as a string, so ``lr: 1e-3`` would reach the model as text), and
    ``2024-05-01`` stays a string (a date is not JSON and a run key or data window is usually text).
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}  # fresh lists, so yaml.SafeLoader itself is left untouched
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


class YamlError(ValueError):
    """A config (or an override's value) that is not plain YAML data; one line that says where."""


def parse_yaml(text: str, where: str = "the value") -> Any:
    """Parse one YAML document (a file or an override's value) with the rules above.

    Syntax errors and tags other than plain data (``!!python/object``, ...) raise :class:`YamlError`
    naming ``where`` and the line and column, in one line."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise YamlError(_describe_yaml_error(exc, where)) from None


def _describe_yaml_error(exc: yaml.YAMLError, where: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    tag = re.search(r"tag '?tag:yaml\.org,2002:(python/[^' ]+)", problem)
    if tag:
        return (
            f"Expected plain YAML data in {where}, received the tag !!{tag.group(1)}{at}: configs hold data "
            "only, never Python objects (write the import path as a string, e.g. model: package.module:Class)."
        )
    context = getattr(exc, "context", None)
    detail = f"{context}, {problem}" if context else problem
    return f"Expected valid YAML in {where}{at}: {detail}."


def load_yaml_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping at the top of a YAML file; an empty file is an empty mapping."""
    with open(path, encoding="utf-8") as handle:
        data = parse_yaml(handle.read(), repr(os.fspath(path)))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"Expected a mapping at the top of {os.fspath(path)!r}, found {type(data).__name__}."
        )
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``a.b.c=value`` applied in order; ``value`` is parsed as YAML.

    Missing intermediate mappings are created, so ``model_kwargs.hidden=64`` works on a file that has
    no ``model_kwargs``. Unknown names are not refused here: the model's validation names them.
    """
    result: dict[str, Any] = copy.deepcopy(dict(data))
    for item in overrides:
        path, sep, text = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(k.strip() for k in keys):
            raise ValueError(f"Expected an override of the form 'a.b.c=value', received {item!r}.")
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key.strip(), {})
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ValueError(f"Override {item!r}: {where!r} is a value, not a section.")
            node = child
        node[keys[-1].strip()] = parse_yaml(text, f"the override {item!r}") if text.strip() else None
    return result


def _encode(value: Any) -> str:
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value  # cannot be mistaken for another JSON value: store it plainly
    return json.dumps(value, sort_keys=True)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# Keys that go into a param name as they are. Anything else (a dot, which would read back as nesting, or a
# character MLflow's logger renames) keeps its whole mapping as one JSON value instead.
_NAME_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{prefix + "a.b": "1"}``; lists, empty mappings and mappings with keys
    that are not plain names are kept whole as JSON, so :func:`unflatten` never has to guess a structure.

    MLflow caps a param value at 6000 characters and the logger cuts longer ones, which then no longer
    read back: a very wide explicit ``data.features`` list is the one field that can get there.
    """
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and all(_NAME_KEY.match(str(k)) for k in value):
            out.update(flatten(value, name + "."))
        else:
            out[name] = _encode(value)
    return out


def unflatten(params: Mapping[str, str], prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`flatten`; params without ``prefix`` (other things logged to the run) are ignored."""
    result: dict[str, Any] = {}
    for name in sorted(params):
        if not name.startswith(prefix):
            continue
        keys = name[len(prefix) :].split(".")
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = _decode(params[name])
    return result
