"""Header values encrypted at rest, each bound to its workspace and header name (AES-GCM).

With ``SECRETS_KEY`` set, every header value of a trigger is stored in Redis as
``enc2:<key id>:<base64url of nonce + ciphertext>``: AES-256-GCM with a random 96-bit nonce and,
as associated data, the workspace id and the lower-cased header name (HTTP names are
case-insensitive). A value copied into another workspace's trigger or under another header name
does not decrypt. ``SECRETS_KEY`` is a comma-separated list of Fernet keys (the format is kept from
the first version): the AES key of each entry is derived once per cipher with HKDF-SHA256 over the
Fernet key's 32 bytes, and its key id (8 hex digits, also derived) says which entry sealed a value.
The first entry encrypts, all of them decrypt, so a key is rotated by putting the new one first,
re-saving the workspaces (or running ``scheduler-api rotate-secrets``) and then dropping the old
key. Generate a key with::

    python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"

Values of the first version, ``enc:<Fernet token>``, are not bound to anything; they are still read
(with any configured key) and ``rotate-secrets`` rewrites them in the bound form.

Without ``SECRETS_KEY`` values are stored as given (the API still never shows them).
Failure rule: a value that cannot be decrypted (key removed too early, or a value moved to another
workspace or header) makes that firing fail without retries, with the reason in its record; it
never sends the ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scheduler_api.errors import SecretsError as SecretsError  # raised by `open`

PREFIX = "enc2:"  # bound AES-GCM values: enc2:<key id>:<base64url(nonce + ciphertext)>
FERNET_PREFIX = "enc:"  # first-version Fernet tokens, read only
_NONCE = 12


def _derive(fernet_key: str, info: bytes, length: int) -> bytes:
    raw = base64.urlsafe_b64decode(fernet_key.encode())
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(raw)


def associated_data(workspace_id: str, name: str) -> bytes:
    """What a sealed value is bound to: its workspace and lower-cased header name."""
    return json.dumps(["scheduler-api header v2", workspace_id, name.lower()]).encode()


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX) or value.startswith(FERNET_PREFIX)


class HeaderCipher:
    """Encrypts and decrypts header values with the keys of ``SECRETS_KEY``."""

    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise ValueError("SECRETS_KEY must hold at least one Fernet key")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in parts])
        except ValueError as e:
            raise ValueError(f"SECRETS_KEY: not a valid Fernet key ({e})") from None
        # Derived once here, never per value: key id -> AES-GCM of that entry, first entry first.
        self._aead: dict[str, AESGCM] = {}
        for part in parts:
            key_id = _derive(part, b"scheduler-api header key id", 4).hex()
            self._aead.setdefault(key_id, AESGCM(_derive(part, b"scheduler-api header aes-gcm", 32)))
        self._first_id = next(iter(self._aead))

    def seal(self, headers: dict[str, str], *, workspace_id: str) -> dict[str, str]:
        aead = self._aead[self._first_id]
        out = {}
        for name, value in headers.items():
            nonce = os.urandom(_NONCE)
            sealed = nonce + aead.encrypt(nonce, value.encode(), associated_data(workspace_id, name))
            out[name] = f"{PREFIX}{self._first_id}:{base64.urlsafe_b64encode(sealed).decode()}"
        return out

    def open(self, headers: dict[str, str], *, workspace_id: str) -> dict[str, str]:
        return {name: self._open_one(name, value, workspace_id) for name, value in headers.items()}

    def _open_one(self, name: str, value: str, workspace_id: str) -> str:
        if value.startswith(FERNET_PREFIX):
            try:
                return self._fernet.decrypt(value[len(FERNET_PREFIX) :].encode()).decode()
            except InvalidToken:
                raise SecretsError(f"header {name!r} cannot be decrypted with SECRETS_KEY") from None
        if not value.startswith(PREFIX):
            return value
        key_id, _, body = value[len(PREFIX) :].partition(":")
        aead = self._aead.get(key_id)
        if aead is None:
            raise SecretsError(f"header {name!r} cannot be decrypted with SECRETS_KEY (its key is not configured)")
        try:
            sealed = base64.urlsafe_b64decode(body.encode())
            plain = aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], associated_data(workspace_id, name))
            return plain.decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise SecretsError(
                f"header {name!r} cannot be decrypted with SECRETS_KEY for this workspace and header name"
            ) from None

    def rotate(self, headers: dict[str, str], *, workspace_id: str) -> dict[str, str]:
        """Re-encrypt with the first key, bound to the workspace (plain and Fernet values too)."""
        return self.seal(self.open(headers, workspace_id=workspace_id), workspace_id=workspace_id)


def open_headers(cipher: HeaderCipher | None, headers: dict[str, str], *, workspace_id: str) -> dict[str, str]:
    """Decrypt when a cipher is configured; a sealed value without one is an error."""
    if cipher is not None:
        return cipher.open(headers, workspace_id=workspace_id)
    if any(is_sealed(v) for v in headers.values()):
        raise SecretsError("header values are encrypted but SECRETS_KEY is not set")
    return headers
