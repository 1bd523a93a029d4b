"""Header values encrypted at rest (Fernet, from `cryptography`).

With ``SECRETS_KEY`` set, every header value of a trigger is stored in Redis as
``enc:<Fernet token>`` and decrypted only by the worker that sends the request. ``SECRETS_KEY`` is a
comma-separated list of Fernet keys: the first encrypts, all of them decrypt, so a key is rotated
by putting the new one first, re-saving the workspaces (or running
``scheduler-api rotate-secrets``) and then dropping the old key. Generate a key with::

    python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"

Without ``SECRETS_KEY`` values are stored as given (the API still never shows them).
Failure rule: a value that cannot be decrypted (key removed too early) makes that firing fail
without retries, with the reason in its record; it never sends the ciphertext.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from scheduler_api.errors import SecretsError as SecretsError  # raised by `open`

PREFIX = "enc:"


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

    def seal(self, headers: dict[str, str]) -> dict[str, str]:
        return {name: PREFIX + self._fernet.encrypt(value.encode()).decode() for name, value in headers.items()}

    def open(self, headers: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, value in headers.items():
            if value.startswith(PREFIX):
                try:
                    value = self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
                except InvalidToken:
                    raise SecretsError(f"header {name!r} cannot be decrypted with SECRETS_KEY") from None
            out[name] = value
        return out

    def rotate(self, headers: dict[str, str]) -> dict[str, str]:
        """Re-encrypt with the first key (plain values get encrypted too)."""
        return self.seal(self.open(headers))


def open_headers(cipher: HeaderCipher | None, headers: dict[str, str]) -> dict[str, str]:
    """Decrypt when a cipher is configured; a sealed value without one is an error."""
    if cipher is not None:
        return cipher.open(headers)
    if any(v.startswith(PREFIX) for v in headers.values()):
        raise SecretsError("header values are encrypted but SECRETS_KEY is not set")
    return headers
