"""Encryption at rest for Secret values: what lands in the ``kyb-secrets`` bucket is sealed.

Kubernetes' ``EncryptionConfiguration`` with the ``aesgcm`` provider, in one process-wide
setting: once :func:`configure` has loaded a 32-byte key, the store seals every value of a
Secret's ``data`` on write (``enc:v1:<base64 of nonce + ciphertext>``, AES-256-GCM, the
Secret's namespace/name bound in as associated data so a sealed value cannot be moved to
another Secret) and opens it again on every read and watch. Without a key, values are
stored as given (Kubernetes' ``identity`` provider); sealed values read without a key stay
sealed rather than fail, so a misconfigured reader shows ciphertext, never garbage.

The key file holds the raw 32 bytes or their base64 (as Kubernetes' config does), mode 0600.
"""

from __future__ import annotations

import base64
import os
import secrets as _random
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.meta import LAST_APPLIED_ANNOTATION

PREFIX = "enc:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
ENV_KEY_FILE = "KYB_SECRET_KEY_FILE"
# apply's record of the manifest: for a Secret it holds the values too, so it is sealed as well
LAST_APPLIED = LAST_APPLIED_ANNOTATION

T = TypeVar("T")


class SecretBoxError(Exception):
    """A sealed value that this key cannot open (wrong key, or tampered with)."""


class SecretBox:
    """Seal and open single values with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a secret key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, value: str, context: str) -> str:
        if value.startswith(PREFIX):
            return value  # sealed already
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode(), context.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, value: str, context: str) -> str:
        if not value.startswith(PREFIX):
            return value  # written before encryption was switched on
        raw = base64.b64decode(value[len(PREFIX) :])
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except InvalidTag:
            raise SecretBoxError(f"cannot decrypt a value of Secret {context}: wrong key or altered data") from None


def generate_key_file(path: Path) -> Path:
    """Write a fresh random key to ``path`` (0600) unless one is there already."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(_random.token_bytes(KEY_BYTES)) + b"\n")
    return path


def load_key(path: Path) -> bytes:
    raw = Path(path).read_bytes().strip()
    if len(raw) == KEY_BYTES:
        return raw
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path}: expected {KEY_BYTES} raw bytes or their base64")
    return key


# -- the process-wide setting the store consults --------------------------------------------

_box: SecretBox | None = None


def configure(path: Path | str | None) -> SecretBox | None:
    """Use the key in ``path`` (None: stop encrypting). Returns the active box."""
    global _box
    _box = SecretBox(load_key(Path(path))) if path else None
    return _box


def configure_from(options: dict[str, Any]) -> SecretBox | None:
    """From the service options (``secret_key_file``) or ``KYB_SECRET_KEY_FILE``; leaves the
    setting alone when neither names a key."""
    path = options.get("secret_key_file") or os.environ.get(ENV_KEY_FILE)
    if path:
        return configure(path)
    return _box


def active() -> SecretBox | None:
    return _box


def _context(obj: Any) -> str:
    return f"{obj.metadata.namespace or 'default'}/{obj.metadata.name}"


def seal_object(obj: T) -> T:
    """The Secret as it is stored: ``data`` values sealed, ``stringData`` never stored."""
    box = _box
    data = getattr(obj, "data", None)
    if box is None or not isinstance(data, dict):
        return obj
    ctx = _context(obj)
    changes: dict[str, Any] = {"data": {k: box.seal(v, ctx) for k, v in data.items()}}
    if getattr(obj, "stringData", None):
        changes["stringData"] = {}
    meta = obj.metadata  # type: ignore[attr-defined]
    if LAST_APPLIED in meta.annotations:
        notes = {**meta.annotations, LAST_APPLIED: box.seal(meta.annotations[LAST_APPLIED], ctx)}
        changes["metadata"] = msgspec.structs.replace(meta, annotations=notes)
    return msgspec.structs.replace(obj, **changes)  # type: ignore[type-var]


def open_object(obj: T) -> T:
    """The Secret as readers see it: ``data`` values in the clear."""
    box = _box
    data = getattr(obj, "data", None)
    if box is None or not isinstance(data, dict):
        return obj
    meta = obj.metadata  # type: ignore[attr-defined]
    note = meta.annotations.get(LAST_APPLIED, "")
    if not note.startswith(PREFIX) and not any(v.startswith(PREFIX) for v in data.values()):
        return obj
    ctx = _context(obj)
    changes: dict[str, Any] = {"data": {k: box.open(v, ctx) for k, v in data.items()}}
    if note.startswith(PREFIX):
        notes = {**meta.annotations, LAST_APPLIED: box.open(note, ctx)}
        changes["metadata"] = msgspec.structs.replace(meta, annotations=notes)
    return msgspec.structs.replace(obj, **changes)  # type: ignore[type-var]
