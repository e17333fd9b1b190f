"""The name syntaxes Kubernetes enforces: DNS-1123 labels and subdomains, label keys and
values. Each check returns a list of problems (empty when valid), worded as Kubernetes does."""

from __future__ import annotations

import re
from collections.abc import Callable

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253


def dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(f"must be no more than {DNS1123_LABEL_MAX} characters")
    if not _DNS1123_LABEL.fullmatch(value):
        errs.append(
            f"a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
            f"start and end with an alphanumeric character (e.g. 'my-name', or '123-abc'), got \"{value}\""
        )
    return errs


def dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errs.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            f"and must start and end with an alphanumeric character (e.g. 'example.com'), got \"{value}\""
        )
    return errs


def path_segment_name(value: str) -> list[str]:
    """Kubernetes' IsValidPathSegmentName: the names of RBAC objects (``system:auth-delegator``)."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def qualified_name(value: str) -> list[str]:
    """A label or annotation key: an optional DNS subdomain prefix and '/', then a name <= 63 chars."""
    if not value:
        return ["name part must be non-empty"]
    prefix, sep, name = value.rpartition("/")
    errs: list[str] = []
    if sep:
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += [f"prefix part {e}" for e in dns1123_subdomain(prefix)]
    if len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.fullmatch(name):
        errs.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            f"with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc'), got \"{value}\""
        )
    return errs


def label_value(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE.fullmatch(value):
        errs.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            f"and must start and end with an alphanumeric character, got \"{value}\""
        )
    return errs


def env_var_name(value: str) -> list[str]:
    if not value or not re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", value):
        return [
            "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or "
            f"'.', and must not start with a digit, got \"{value}\""
        ]
    return []


def c_identifier(value: str) -> bool:
    return bool(_C_IDENTIFIER.fullmatch(value))


# -- generated names ---------------------------------------------------------------------------

# Kubernetes' utilrand alphabet (rand.String, SafeEncodeString): no vowels, so no words, and no
# look-alike characters (0/o, 1/l, 3/e).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATED_SUFFIX_LENGTH = 5


def generated_name(prefix: str, draw: Callable[[str, int], str] | None = None) -> str:
    """``prefix`` plus five random characters of :data:`SAFE_ALPHABET`, as the apiserver names
    an object from its ``metadata.generateName``. ``draw(alphabet, k)`` picks them (random by
    default; tests pass their own)."""
    if draw is None:
        import random

        def draw(alphabet: str, k: int) -> str:
            return "".join(random.choices(alphabet, k=k))

    return prefix + draw(SAFE_ALPHABET, GENERATED_SUFFIX_LENGTH)


def safe_encode(text: str) -> str:
    """Kubernetes' ``rand.SafeEncodeString``: each character mapped into :data:`SAFE_ALPHABET`."""
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in text.encode())
