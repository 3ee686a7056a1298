"""Config of the authz layer: shadow mode, how denials look, and ownership resolvers."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, HttpUrl, field_validator, model_validator

from bastion.config.types import Duration, Secret, StrictModel


class _ResolverBase(StrictModel):
    """What every ownership resolver has: a name and a cache."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="What `x-bastion-owner` rules call it by (`resolver: <name>`).",
    )
    cache_ttl: Duration = Field(
        default=30, ge=0, le=3600, description="How long an owner answer is reused (0: never)."
    )
    negative_ttl: Duration = Field(
        default=5,
        ge=0,
        le=3600,
        description="How long a 'no such object' answer is reused (0: never).",
    )
    cache_size: int = Field(
        default=10_000, ge=0, le=1_000_000, description="Answers kept (least recently used go)."
    )
    timeout: Duration = Field(
        default=1, gt=0, le=30, description="Longest wait for one answer; then fail closed."
    )


class SqlResolverConfig(_ResolverBase):
    """Owner of an object from an SQL query: the first column of every row returned."""

    type: Literal["sql"] = Field(description="`sql` or `http`.")
    database: Secret = Field(
        description="sqlite:///PATH (opened read-only) or postgresql://USER@HOST/DB; may be "
        "`${ENV}` or `file:PATH` (it can hold a password)."
    )
    query: str = Field(
        description="SELECT returning the owner(s) of one object; its one parameter is `?` "
        "for SQLite and `$1` for PostgreSQL, e.g. `SELECT user_id FROM invoices WHERE id = ?`."
    )
    pool_size: int = Field(
        default=4, ge=1, le=64, description="PostgreSQL connections kept by this resolver."
    )

    @model_validator(mode="after")
    def _url_and_query(self) -> Self:
        url = self.database.get_secret_value()
        if url.startswith("sqlite:///"):
            if self.query.count("?") != 1 or "$1" in self.query:
                raise ValueError("an SQLite query needs exactly one '?' placeholder")
        elif url.startswith(("postgresql://", "postgres://")):
            if "$1" not in self.query or "$2" in self.query:
                raise ValueError("a PostgreSQL query needs exactly one parameter, $1")
        else:
            raise ValueError("database must be sqlite:///PATH or postgresql://…")
        if not self.query.lstrip().lower().startswith(("select", "with")):
            raise ValueError("query must be a SELECT")
        return self


class HttpResolverConfig(_ResolverBase):
    """Owner of an object from an internal HTTP endpoint answering `{"owner": …}` (a value
    or a list); 404 means no such object."""

    type: Literal["http"] = Field(description="`sql` or `http`.")
    url: HttpUrl = Field(description="Base URL of the internal service, e.g. http://10.0.0.5:8080.")
    path: str = Field(
        description="Path with `{id}` where the object id goes (percent-encoded), e.g. "
        "/internal/invoices/{id}/owner."
    )
    max_response_bytes: int = Field(
        default=16_384, ge=64, le=1_048_576, description="Larger answers are resolver errors."
    )
    authorization: Secret | None = Field(
        default=None, description="Authorization header value sent to the service."
    )

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or v.count("{id}") != 1:
            raise ValueError("path must start with '/' and contain {id} exactly once")
        if any(c in v for c in "\r\n #"):
            raise ValueError("path must not contain spaces, line breaks or '#'")
        return v

    @field_validator("authorization")
    @classmethod
    def _header_value(cls, v: Secret | None) -> Secret | None:
        if v is not None and any(c in v.get_secret_value() for c in "\r\n\0"):
            raise ValueError("authorization must be a single header value")
        return v


Resolver = Annotated[SqlResolverConfig | HttpResolverConfig, Field(discriminator="type")]


class AuthzConfig(StrictModel):
    """Authorization per operation of the route's OpenAPI document: `security` scopes and
    `x-bastion-roles` (BFLA), `x-bastion-owner` rules (BOLA). Runs only with `openapi.spec`."""

    enforce: bool = Field(
        default=True,
        description="false: shadow mode — denials are recorded (the audit record's "
        "`bastion.findings.authz_shadow`, security events) and the request continues.",
    )
    hide_existence: bool = Field(
        default=False,
        description="Answer an ownership denial with 404 instead of 403, so callers cannot "
        "tell objects they may not see from objects that do not exist.",
    )
    resolver_error_status: Literal[403, 503] = Field(
        default=503,
        description="Answer when a resolver cannot answer (fail closed): 503 "
        "authz.resolver_unavailable or 403 access.forbidden.",
    )
    max_object_ids: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Most object ids one request may carry in a list parameter checked by an "
        "ownership rule; more is refused.",
    )
    resolvers: list[Resolver] = Field(
        default_factory=list, description="Ownership resolvers the rules may name."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [r.name for r in self.resolvers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"resolver names must be unique: {', '.join(dupes)}")
        return self
