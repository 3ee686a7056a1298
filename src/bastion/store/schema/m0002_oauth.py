"""Migration 2: the authorization server's OAuth state.

* ``oauth_clients`` — registered clients. ``secrets`` is a JSON array of at most two
  ``{hash, created_at, expires_at}`` objects (HMAC-SHA256 under the server's pepper, never the
  secret), so a rotated secret keeps working until its ``expires_at``; ``jwks`` holds the public
  keys of a ``private_key_jwt`` client.
* ``oauth_codes`` — authorization codes by SHA-256 of the code, single use (``used_at``), with
  the refresh family and access-token ``jti`` issued from them so a replayed code revokes both;
  ``replayed_at`` tells the first redemption, still issuing, that a replay came meanwhile.
* ``oauth_refresh_families`` / ``oauth_refresh_tokens`` — one family per login; every refresh
  token (by SHA-256) names its family and generation. Rotation is one compare-and-swap on the
  family's ``generation``. ``retry_response`` is the last token response encrypted under a key
  derived from the previous refresh token: only a caller holding that token can read it back.
* ``oauth_assertion_jtis`` — ``jti`` values of RFC 7523 client assertions already used.
"""

from __future__ import annotations

from bastion.store.schema import Migration

MIGRATION = Migration(
    version=2,
    name="oauth clients, authorization codes, refresh-token families",
    statements=(
        "CREATE TABLE oauth_clients ("
        " id VARCHAR(128) PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " auth_method VARCHAR(32) NOT NULL,"
        " secrets TEXT NOT NULL,"  # JSON array, at most two entries
        " jwks TEXT,"  # JSON object (private_key_jwt) or NULL
        " redirect_uris TEXT NOT NULL,"  # JSON array of exact URIs
        " grant_types TEXT NOT NULL,"  # JSON array
        " scopes TEXT NOT NULL,"  # JSON array: what the client may ask for
        " audiences TEXT NOT NULL,"  # JSON array: `aud` values of its access tokens
        " created_at DOUBLE PRECISION NOT NULL,"
        " updated_at DOUBLE PRECISION NOT NULL,"
        " CHECK (auth_method IN"
        " ('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none')))",
        "CREATE TABLE oauth_codes ("
        " code_hash VARCHAR(64) PRIMARY KEY,"
        " client_id VARCHAR(128) NOT NULL,"
        " redirect_uri TEXT NOT NULL,"
        " scope TEXT NOT NULL,"
        " subject VARCHAR(256) NOT NULL,"
        " nonce TEXT,"
        " code_challenge VARCHAR(128) NOT NULL,"
        " auth_time DOUBLE PRECISION NOT NULL,"
        " amr TEXT NOT NULL,"  # JSON array
        " acr VARCHAR(128) NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL,"
        " used_at DOUBLE PRECISION,"
        " replayed_at DOUBLE PRECISION,"
        " family_id VARCHAR(64),"
        " access_jti VARCHAR(64),"
        " access_exp DOUBLE PRECISION)",
        "CREATE INDEX oauth_codes_expires_idx ON oauth_codes (expires_at)",
        "CREATE TABLE oauth_refresh_families ("
        " id VARCHAR(64) PRIMARY KEY,"
        " client_id VARCHAR(128) NOT NULL,"
        " subject VARCHAR(256) NOT NULL,"
        " scope TEXT NOT NULL,"
        " audience TEXT NOT NULL,"  # JSON array
        " auth_time DOUBLE PRECISION NOT NULL,"
        " amr TEXT NOT NULL,"
        " acr VARCHAR(128) NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL,"
        " last_used_at DOUBLE PRECISION NOT NULL,"
        " generation INTEGER NOT NULL,"
        " rotated_at DOUBLE PRECISION,"
        " retry_response TEXT,"
        " access_jti VARCHAR(64),"
        " access_exp DOUBLE PRECISION,"
        " revoked_at DOUBLE PRECISION,"
        " revoked_reason VARCHAR(32))",
        "CREATE INDEX oauth_families_subject_idx ON oauth_refresh_families (subject)",
        "CREATE INDEX oauth_families_expires_idx ON oauth_refresh_families (expires_at)",
        "CREATE TABLE oauth_refresh_tokens ("
        " token_hash VARCHAR(64) PRIMARY KEY,"
        " family_id VARCHAR(64) NOT NULL REFERENCES oauth_refresh_families (id)"
        " ON DELETE CASCADE,"
        " generation INTEGER NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX oauth_refresh_tokens_family_idx ON oauth_refresh_tokens (family_id)",
        "CREATE TABLE oauth_assertion_jtis ("
        " client_id VARCHAR(128) NOT NULL,"
        " jti VARCHAR(256) NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (client_id, jti))",
        "CREATE INDEX oauth_assertion_jtis_expires_idx ON oauth_assertion_jtis (expires_at)",
    ),
)
