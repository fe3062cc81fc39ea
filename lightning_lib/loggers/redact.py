"""Secret scrubbing for everything a logger sends to a tracking server (params, tags, messages).

Two kinds of evidence make a value secret:

- its *name* looks like a credential (``password``, ``api_key``, ``aws_secret_access_key``, ``token``,
  ``authorization``, ``private_key``, ...): the whole value becomes ``"***"``;
- its *text* looks like one wherever it appears: AWS access key ids, PEM private keys, JWTs, bearer
  tokens, well-known token formats (GitHub, Slack, Hugging Face, OpenAI-style ``sk-``), ``password=...``
  pairs in connection strings, the password of a ``scheme://user:password@host`` URL, and the exact value
  of any environment variable whose name looks like a credential (so a secret that reached the config
  through the environment is caught even under an innocent name).

Scrubbing errs on the side of hiding: a false positive costs one unreadable param, a false negative
leaks a credential into a database that many people read.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"

# Name tokens that mark a credential on their own ("token" but not "tokens" or "tokenizer": names are
# split into whole words first, so ``max_tokens`` and ``tokenizer_name`` stay visible).
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "apikey", "credential",
        "credentials", "authorization", "auth", "cookie", "jwt", "bearer", "privatekey", "accesskey",
        "secretkey", "sessionkey", "signingkey", "sas", "pat",
    }
)  # fmt: skip
# Two consecutive words that mark a credential together ("api key", "access key", "private key", ...).
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("session", "key"),
        ("account", "key"), ("client", "secret"), ("signing", "key"), ("encryption", "key"),
        ("master", "key"), ("access", "token"), ("refresh", "token"), ("connection", "string"),
    }
)  # fmt: skip
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

# Patterns of secret text; each match is replaced by REDACTED, the surrounding text is kept.
_TEXT_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
    re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"),  # JWT
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),  # OpenAI-style API keys
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),  # Google API keys
    # Authorization header values; the token must hold a digit or "=" so prose ("basic augmentation") stays
    re.compile(r"(?i)\b(?:bearer|basic|token)\s+(?=[A-Za-z0-9._~+/-]*[0-9=])[A-Za-z0-9._~+/=-]{12,}"),
]
# "password=...", "AccountKey=...;", "?sig=...&" and friends: keep the name, hide the value.
_ASSIGNMENT = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|account[_-]?key|sig|signature"
    r"|sharedaccesssignature|client[_-]?secret)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s;&,]+)"
)
# scheme://user:password@host: keep the user and host, hide the password.
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):([^/\s@]+)@")
# Values shorter than this are too likely to occur by chance to be scrubbed by exact match.
_MIN_ENV_SECRET_LENGTH = 6
_NOT_SECRET_ENV = frozenset({"PWD", "OLDPWD"})


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD_SPLIT.split(name) if w]


def is_secret_name(name: str) -> bool:
    """Whether a param, tag or environment variable called ``name`` probably holds a credential."""
    words = _words(name)
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment variables whose names look like credentials, longest first.

    Paths that exist are left out: ``PWD`` or ``SSH_AUTH_SOCK`` match by name but hold no secret, and
    scrubbing them would hide every path under the working directory.
    """
    env = os.environ if environ is None else environ
    values = {
        v
        for k, v in env.items()
        if k not in _NOT_SECRET_ENV
        and is_secret_name(k)
        and len(v) >= _MIN_ENV_SECRET_LENGTH
        and not os.path.exists(v)
    }
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, known_secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret-looking part replaced by ``"***"``."""
    for secret in known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    for pattern in _TEXT_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def redact_mapping(
    values: Mapping[str, Any], known_secrets: Iterable[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Scrub a flat name -> value mapping; return the scrubbed copy and the names whose value changed.

    Values under a secret-looking name become ``"***"`` whatever their type; string values elsewhere are
    scrubbed with :func:`redact_text`. Numbers and booleans under ordinary names are kept as they are.
    """
    secrets = list(secret_env_values() if known_secrets is None else known_secrets)
    clean: dict[str, Any] = {}
    changed: list[str] = []
    for name, value in values.items():
        if is_secret_name(name) and value not in (None, ""):
            new_value: Any = REDACTED
        elif isinstance(value, str):
            new_value = redact_text(value, secrets)
        else:
            new_value = value
        if new_value is not value and new_value != value:
            changed.append(name)
        clean[name] = new_value
    return clean, changed


def redact_nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`redact_mapping` at every level of nested dicts (for backends that keep the nesting: W&B, Comet)."""
    flat = {name: value for name, value in values.items() if not isinstance(value, Mapping)}
    clean, _ = redact_mapping(flat)
    return {
        name: redact_nested(value) if isinstance(value, Mapping) else clean[name]
        for name, value in values.items()
    }
