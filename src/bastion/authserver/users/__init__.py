"""Users of the authorization server: passwords, login, TOTP, lockout."""
