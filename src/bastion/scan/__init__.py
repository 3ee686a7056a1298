"""``bastion scan``: active OWASP API Top 10 checks and a static contract audit for CI.

Layout: :mod:`~bastion.scan.model` (findings), :mod:`~bastion.scan.spec` (the document),
:mod:`~bastion.scan.client` (the budgeted, origin-locked HTTP client), :mod:`~bastion.scan.auth`
(identities), :mod:`~bastion.scan.canary` (SSRF listener), :mod:`~bastion.scan.safety`
(policy and ledger), :mod:`~bastion.scan.checks` (the registry and one module per check),
:mod:`~bastion.scan.audit` (static rules), :mod:`~bastion.scan.runner`, and the reporters.
"""
