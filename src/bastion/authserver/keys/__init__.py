"""Signing keys of the authorization server: lifecycle, JWKS, key stores."""
