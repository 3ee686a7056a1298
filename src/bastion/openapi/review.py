"""What a reviewer would flag in a compiled document (for ``bastion config check``).

* an operation with an id-like path parameter (``id``, ``*_id``, ``*Id``, ``uuid``, or
  ``format: uuid``) and no ``x-bastion-owner`` rule: the shape of a BOLA;
* an operation with no ``security`` requirement, neither its own nor the document's (the
  authz layer then asks only for an authenticated caller);
* a security requirement no credential Bastion verifies can meet: a scheme that is not
  ``http`` ``bearer``, ``apiKey``, ``oauth2`` or ``openIdConnect``, or schemes that no one
  credential presents together (the authz layer refuses every caller through it).
"""

from __future__ import annotations

from bastion.openapi.model import Operation, Parameter

__all__ = ["id_like", "operation_label", "review"]


def id_like(param: Parameter) -> bool:
    """Whether a parameter looks like it names one object."""
    name = param.name
    lower = name.lower()
    if lower in ("id", "uuid", "guid") or lower.endswith(("_id", "-id", "_uuid", "-uuid")):
        return True
    if name.endswith(("Id", "ID", "Uuid", "UUID")):
        return True
    schema = param.schema
    return isinstance(schema, dict) and schema.get("format") == "uuid"


def operation_label(op: Operation) -> str:
    """``GET /accounts/{id} (getAccount)``."""
    label = f"{op.method} {op.path_template}"
    return f"{label} ({op.operation_id})" if op.operation_id else label


def review(operations: tuple[Operation, ...]) -> list[str]:
    """One warning per finding, ``<operation>: <why>``, in document order."""
    out: list[str] = []
    for op in operations:
        label = operation_label(op)
        if not op.owner_rules:
            for p in op.parameters:
                if p.location == "path" and id_like(p):
                    out.append(
                        f"{label}: path parameter {p.name!r} looks like an object id but the "
                        "operation has no x-bastion-owner rule (BOLA)"
                    )
        if op.security is None:
            out.append(
                f"{label}: no security requirement (neither the operation nor the document "
                "declares one); only an authenticated caller is required"
            )
        for req in op.security or ():
            kinds = [op.scheme_kinds.get(name, frozenset()) for name in req]
            if req and not frozenset.intersection(*kinds):
                names = ", ".join(repr(name) for name in req)
                out.append(
                    f"{label}: no credential Bastion verifies presents {names} (JWTs: oauth2, "
                    "openIdConnect, http bearer; API keys: apiKey, http bearer): that "
                    "requirement is never met"
                )
    return out
