"""Signing keys of the authorization server: lifecycle, JWKS, key stores.

:func:`open_key_manager` builds the :class:`KeyManager` the OAuth endpoints sign with; see
``docs/keys.md`` for the lifecycle, rotation and the key stores.
"""

from bastion.authserver.keys.config import KeysConfig, LocalKeyStoreConfig, Pkcs11KeyStoreConfig
from bastion.authserver.keys.lifecycle import KeyRecord
from bastion.authserver.keys.signing import KeyManager, SigningUnavailable, open_key_manager
from bastion.crypto.keystore import KeyStoreError

__all__ = [
    "KeyManager",
    "KeyRecord",
    "KeyStoreError",
    "KeysConfig",
    "LocalKeyStoreConfig",
    "Pkcs11KeyStoreConfig",
    "SigningUnavailable",
    "open_key_manager",
]
