"""The OAuth 2.1 / OpenID Connect protocol endpoints, one module per RFC."""
