"""OpenAPI documents as enforced contracts: loading, ``$ref`` resolution, compiled operations.

``spec.py`` turns a document into a :class:`~bastion.openapi.model.CompiledSpec` once at
start-up; the ``openapi``, ``authz`` and ``response_filter`` layers use it per request.
"""
