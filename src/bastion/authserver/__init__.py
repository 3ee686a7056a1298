"""The authorization server: OAuth 2.1 with JWT access tokens, refresh rotation, MFA.

A framework-free core (one module per RFC, handlers ``Request -> Response`` from
:mod:`bastion.authserver.http`) with one thin ASGI adapter. Sub-packages: ``oauth`` (the protocol
endpoints), ``keys`` (signing-key lifecycle and JWKS), ``users`` (accounts, login, MFA).
"""
