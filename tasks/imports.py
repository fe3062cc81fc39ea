"""User code by import path (``package.module:Class``), only from the module prefixes a deployment allows.

A config can arrive from the Prefect UI or API, so the import path in it is untrusted input: importing a
module runs its top-level code. The prefix is therefore checked on the string, before anything is
imported.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

# The bundled examples and the reusable data modules are always importable; a deployment adds its own
# packages through this variable.
DEFAULT_ALLOWED_PREFIXES: tuple[str, ...] = ("examples.", "datamodules.")
ALLOWED_IMPORTS_ENV = "LIGHTNING_LIB_ALLOWED_IMPORTS"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# Plain ECMA-compatible syntax: the same pattern goes into the JSON schema the Prefect UI validates with.
_DOTTED = rf"{_IDENT}(\.{_IDENT})*"
IMPORT_PATH_PATTERN = rf"^{_DOTTED}:{_IDENT}$"
_IMPORT_PATH = re.compile(IMPORT_PATH_PATTERN)


def import_path_pattern(prefixes: tuple[str, ...] | None = None) -> str:
    """The JSON-schema pattern of an import path under the allowed prefixes (default: the environment's).

    It refuses what :func:`check_import_path` refuses, so the Prefect form and the server's parameter check
    turn down a model outside the prefixes when the run is submitted, not when the worker loads it.
    """
    allowed = allowed_prefixes() if prefixes is None else prefixes
    # a prefix that is not a dotted name matches no import path in check_import_path either
    roots = sorted({r for r in (p.rstrip(".") for p in allowed) if re.fullmatch(_DOTTED, r)})
    return rf"^({'|'.join(map(re.escape, roots))})(\.{_IDENT})*:{_IDENT}$"


class DisallowedImportError(ValueError):
    """An import path outside the allowed module prefixes; raised before the module is imported."""


def allowed_prefixes(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The default prefixes plus the comma-separated ones in ``LIGHTNING_LIB_ALLOWED_IMPORTS``."""
    env = os.environ if environ is None else environ
    extra = [p.strip() for p in env.get(ALLOWED_IMPORTS_ENV, "").split(",") if p.strip()]
    return DEFAULT_ALLOWED_PREFIXES + tuple(p for p in extra if p not in DEFAULT_ALLOWED_PREFIXES)


def _under(module: str, prefix: str) -> bool:
    # "pkg" and "pkg." both mean the package pkg and what is below it, never a sibling such as "pkg_evil".
    root = prefix.rstrip(".")
    return module == root or module.startswith(root + ".")


def check_import_path(path: str, prefixes: tuple[str, ...] | None = None) -> str:
    """Return ``path`` if it is well formed and under an allowed prefix; raise ``ValueError`` otherwise."""
    if not isinstance(path, str) or not _IMPORT_PATH.match(path):
        raise ValueError(f"Expected an import path of the form 'package.module:Class', received {path!r}.")
    module = path.partition(":")[0]
    allowed = allowed_prefixes() if prefixes is None else prefixes
    if not any(_under(module, p) for p in allowed):
        raise DisallowedImportError(
            f"Import path {path!r} is outside the allowed module prefixes {list(allowed)}; it was not "
            f"imported. A deployment allows more with {ALLOWED_IMPORTS_ENV}=prefix1,prefix2."
        )
    return path


def load_class(path: str, base: type | None = None, prefixes: tuple[str, ...] | None = None) -> type[Any]:
    """Import the class named by ``package.module:Class`` after checking its prefix.

    With ``base``, the class must be a subclass of it (a LightningModule for ``model``, a
    LightningDataModule for ``datamodule``), so a wrong path fails here rather than deep in the Trainer.
    """
    check_import_path(path, prefixes)
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"Could not import module {module_name!r} of {path!r}: {err}") from err
    obj = getattr(module, attr, None)
    if not isinstance(obj, type):
        found = "nothing" if obj is None else type(obj).__name__
        raise TypeError(f"Expected {path!r} to name a class, found {found}.")
    if base is not None and not issubclass(obj, base):
        raise TypeError(f"Expected {path!r} to be a subclass of {base.__name__}, received {obj.__name__}.")
    return obj
