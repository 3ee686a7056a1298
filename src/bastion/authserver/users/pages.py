"""The login and MFA pages as HTML strings: no template engine, no script, every value escaped.

Each function takes plain values and returns a whole document. Anything that came from a user, a
request or the store goes through :func:`esc` (``html.escape`` with quotes), including values
placed in attributes; there is no other way into the markup. The pages rely on
:func:`bastion.authserver.http.html_response` for the CSP (no script at all, ``img-src data:``
for the QR code, ``form-action 'self'``, no framing).
"""

from __future__ import annotations

from html import escape

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}"
    "label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}"
    "button{margin-top:1rem;padding:.5rem 1rem}.error{color:#a00}.codes{font-family:monospace}"
)


def esc(value: object) -> str:
    """HTML-escape ``value`` for text and quoted attributes."""
    return escape(str(value), quote=True)


def _doc(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{esc(title)}</h1>{body}</body></html>"
    )


def _error(message: str | None) -> str:
    return f'<p class="error" role="alert">{esc(message)}</p>' if message else ""


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'


def login_page(*, csrf: str, return_to: str | None, error: str | None = None) -> str:
    """The username and password form."""
    keep = _hidden("return_to", return_to) if return_to else ""
    return _doc(
        "Sign in",
        _error(error) + '<form method="post" action="/login">'
        f"{_hidden('csrf_token', csrf)}{keep}"
        '<label for="username">Username</label>'
        '<input id="username" name="username" autocomplete="username" required autofocus>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        '<button type="submit">Sign in</button></form>',
    )


def mfa_page(*, csrf: str, error: str | None = None) -> str:
    """The second step: a TOTP code, or a recovery code instead."""
    return _doc(
        "Two-step verification",
        _error(error) + '<form method="post" action="/login/mfa">'
        f"{_hidden('csrf_token', csrf)}"
        '<label for="code">Code from your authenticator app</label>'
        '<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" '
        'pattern="[0-9 ]*" autofocus>'
        '<label for="recovery_code">Or a recovery code</label>'
        '<input id="recovery_code" name="recovery_code" autocomplete="off">'
        '<button type="submit">Verify</button></form>',
    )


def password_change_page(*, csrf: str, error: str | None = None) -> str:
    """The forced change of a one-time password (an invitation), before the login completes."""
    return _doc(
        "Choose your password",
        "<p>You signed in with a one-time password. Choose your own to continue.</p>"
        + _error(error)
        + '<form method="post" action="/password/change">'
        f"{_hidden('csrf_token', csrf)}"
        '<label for="new_password">New password</label>'
        '<input id="new_password" name="new_password" type="password" '
        'autocomplete="new-password" required autofocus>'
        '<label for="confirm_password">New password again</label>'
        '<input id="confirm_password" name="confirm_password" type="password" '
        'autocomplete="new-password" required>'
        '<button type="submit">Set password</button></form>',
    )


def enroll_page(
    *,
    csrf: str,
    qr_data_uri: str,
    secret: str,
    required: bool,
    error: str | None = None,
    ask_password: bool = False,
) -> str:
    """TOTP enrolment: the QR code, the key for typing by hand, and a code to confirm (and the
    password again, ``ask_password``, in a session that signed in earlier)."""
    password = (
        '<label for="password">Your password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        if ask_password
        else ""
    )
    why = (
        "<p>Your account needs two-step verification before you can continue.</p>"
        if required
        else ""
    )
    return _doc(
        "Set up two-step verification",
        why + _error(error) + "<p>Scan this code with an authenticator app:</p>"
        f'<img src="{esc(qr_data_uri)}" alt="QR code of your authenticator key" width="250">'
        f"<p>Or enter this key: <code>{esc(secret)}</code></p>"
        '<form method="post" action="/mfa/enroll">'
        f"{_hidden('csrf_token', csrf)}"
        '<label for="code">Code shown by the app</label>'
        '<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" '
        f"required autofocus>{password}"
        '<button type="submit">Confirm</button></form>',
    )


def recovery_codes_page(*, codes: list[str], continue_to: str) -> str:
    """The recovery codes, shown once, right after enrolment."""
    items = "".join(f"<li>{esc(c)}</li>" for c in codes)
    return _doc(
        "Recovery codes",
        "<p>Each code works once if you lose your authenticator. Store them somewhere safe: "
        "they will not be shown again.</p>"
        f'<ul class="codes">{items}</ul><p><a href="{esc(continue_to)}">Continue</a></p>',
    )


def account_page(
    *,
    csrf: str,
    username: str,
    totp: bool,
    codes_left: int,
    may_disable: bool,
    acr: str,
) -> str:
    """Signed in: what the account looks like and what can be changed."""
    if totp:
        mfa = f"<p>Two-step verification is on ({esc(codes_left)} recovery codes left).</p>"
        if may_disable:
            mfa += (
                '<form method="post" action="/mfa/disable">'
                f"{_hidden('csrf_token', csrf)}"
                '<label for="code">Current code, to switch it off</label>'
                '<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" '
                'required><button type="submit">Switch off</button></form>'
            )
    else:
        mfa = '<p>Two-step verification is off. <a href="/mfa/enroll">Set it up</a></p>'
    return _doc(
        "Your account",
        f"<p>Signed in as <strong>{esc(username)}</strong> ({esc(acr)}).</p>{mfa}"
        '<form method="post" action="/logout">'
        f"{_hidden('csrf_token', csrf)}"
        '<button type="submit">Sign out</button></form>',
    )


def message_page(title: str, message: str, *, link: str = "/login") -> str:
    """A short notice (refused request, too many attempts, expired step)."""
    return _doc(title, f'<p>{esc(message)}</p><p><a href="{esc(link)}">Back</a></p>')
