"""Writes the key reference of ``docs/configuration.md`` from the pydantic config models.

Every key of ``bastion.yaml`` is read from :class:`bastion.config.model.BastionConfig` (and
:class:`~bastion.config.model.LayerSettings` for ``defaults.<layer>``): its dotted path, a
readable type with its bounds, its default and the field's ``description``. The tables replace
what lies between the ``BEGIN GENERATED`` / ``END GENERATED`` markers; the prose around them is
hand-written and left alone.

    python docs/gen_config_reference.py            # rewrite docs/configuration.md
    python docs/gen_config_reference.py --check    # exit 1 if the file is out of date
    python docs/gen_config_reference.py --missing  # fields that lack a description
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, HttpUrl, SecretStr
from pydantic.fields import FieldInfo

from bastion.config.model import BastionConfig, LayerSettings, RouteConfig
from bastion.config.types import parse_duration

DOC = Path(__file__).with_name("configuration.md")
BEGIN = "<!-- BEGIN GENERATED -->"
END = "<!-- END GENERATED -->"

#: Text for fields whose model has no ``description`` yet, keyed by the path shown in the
#: tables. A description in the model always wins; ``--missing`` lists the fields concerned.
FALLBACK: dict[str, str] = {
    "version": "Version of this file's schema; only 1 exists.",
    "listeners[].tls.key_password": "Password of an encrypted `key` file.",
    "audit.sinks[].type": "Where the records go: a rotated JSON-lines file, standard output, "
    "or the state store's `audit_log` table.",
    "audit.sinks[].path": "The file written; with `--workers N` each worker writes its own "
    "`<stem>.w<i><suffix>` next to it.",
    "audit.sinks": "Where records are written; every sink receives every record.",
    "audit.batch_size": "Most records a sink writes at once.",
    "audit.flush_interval": "Longest a record waits for its batch to fill before it is written.",
    "routes[].name": "Unique name of the route, used in logs, audit records and rate-limit keys.",
    "defaults.ratelimit.limits[].key": "Whose budget: `principal` (the authenticated caller; "
    "the client IP on anonymous requests), `ip` (the client IP) or `route` (every caller "
    "together).",
    "defaults.proxy.max_response_header_bytes": "Upstream response heads larger than this "
    "fail with 502.",
}


@dataclass(frozen=True, slots=True)
class Row:
    """One key of the reference: dotted path, type, default, description (Markdown cells)."""

    path: str
    type: str
    default: str
    description: str
    described: bool  # the model itself has a description for it


# -- types ----------------------------------------------------------------------------------------
def _unwrap(ann: Any) -> tuple[Any, list[Any]]:
    """``Annotated[T, m…]`` → ``(T, [m…])`` (nested Annotated flattened)."""
    meta: list[Any] = []
    while get_origin(ann) is Annotated:
        base, *more = get_args(ann)
        ann, meta = base, [*meta, *more]
    return ann, meta


def _members(ann: Any) -> list[Any]:
    """The non-None members of a union, or ``[ann]``."""
    if get_origin(ann) in (Union, types.UnionType):
        return [a for a in get_args(ann) if a is not type(None)]
    return [ann]


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _is_duration(meta: list[Any]) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in meta)


def _item_models(ann: Any) -> tuple[list[type[BaseModel]], str]:
    """The models a field holds (else []), and ``"[]"`` when it holds a list of them."""
    ann, _ = _unwrap(ann)
    suffix = "[]" if get_origin(ann) is list else ""
    if suffix:
        ann, _ = _unwrap(get_args(ann)[0])
    members = [_unwrap(m)[0] for m in _members(ann)]
    return (members if members and all(_is_model(m) for m in members) else []), suffix


_NAMES: dict[Any, str] = {
    SecretStr: "secret",
    bool: "boolean",
    int: "integer",
    str: "string",
    HttpUrl: "URL",
}


def type_name(ann: Any, meta: list[Any]) -> str:
    """A reader's name for a type: ``duration``, ``secret``, ``list of CIDR``, ``"a" | "b"``."""
    ann, more = _unwrap(ann)
    members = _members(ann)
    if len(members) > 1:
        if set(members) <= {IPv4Network, IPv6Network}:
            return "CIDR"
        if all(_is_model(_unwrap(m)[0]) for m in members):
            return "object"
        return " or ".join(type_name(m, meta) for m in members)
    ann, inner = _unwrap(members[0])
    meta = [*meta, *more, *inner]
    if get_origin(ann) is list:
        return _list_of(get_args(ann)[0])
    if get_origin(ann) is Literal:
        return " | ".join(json.dumps(v) for v in get_args(ann))
    if ann is float:
        return "duration" if _is_duration(meta) else "number"
    if ann in _NAMES:
        return _NAMES[ann]
    return "object" if _is_model(ann) else getattr(ann, "__name__", str(ann))


def _list_of(item: Any) -> str:
    inner = type_name(item, [])
    return f"list of ({inner})" if " | " in inner else f"list of {inner}"


def fmt_duration(seconds: float) -> str:
    """``0.2`` → ``200ms``, ``60`` → ``1m``, ``15552000`` → ``180d``: the largest exact unit."""
    if seconds == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if (seconds * 1000) == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def _bounds(meta: list[Any], duration: bool) -> list[str]:
    def num(v: Any) -> str:
        return fmt_duration(float(v)) if duration else f"{v}"

    out: list[str] = []
    ge: Any = next((m.ge for m in meta if isinstance(m, at.Ge)), None)
    le: Any = next((m.le for m in meta if isinstance(m, at.Le)), None)
    if ge is not None and ge == le:
        return [f"= {num(ge)}"]
    for m in meta:
        if isinstance(m, at.Ge):
            out.append(f"≥ {num(m.ge)}")
        elif isinstance(m, at.Gt):
            out.append(f"> {num(m.gt)}")
        elif isinstance(m, at.Le):
            out.append(f"≤ {num(m.le)}")
        elif isinstance(m, at.Lt):
            out.append(f"< {num(m.lt)}")
        elif isinstance(m, at.MinLen):
            out.append(f"at least {m.min_length}")
        elif getattr(m, "pattern", None):
            out.append(f"matching `{m.pattern}`")
    return out


def field_type(field: FieldInfo) -> str:
    """Type name plus the field's bounds, e.g. ``integer, ≥ 1024`` or ``duration, > 0, ≤ 1m``."""
    name = type_name(field.annotation, list(field.metadata))
    bounds = _bounds(list(field.metadata), name == "duration")
    return ", ".join([name, *bounds])


# -- defaults -------------------------------------------------------------------------------------
def render_value(value: Any, ann: Any, meta: list[Any]) -> str:
    """``value`` in YAML flow style (JSON strings), durations with units, secrets hidden."""
    ann, more = _unwrap(ann)
    meta = [*meta, *more]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        items = [
            f"{k}: {render_value(getattr(value, k), f.annotation, list(f.metadata))}"
            for k, f in fields.items()
            if k in value.model_fields_set
        ]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        inner = get_args(ann)[0] if get_origin(ann) is list else Any
        return "[" + ", ".join(render_value(v, inner, []) for v in value) + "]"
    if isinstance(value, int | float) and _is_duration(meta):
        return fmt_duration(float(value))
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(str(value))


def _size_hint(n: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f" ({n // size} {unit})"
    return ""


def field_default(name: str, field: FieldInfo) -> str:
    """The default as a Markdown cell: ``**required**`` or a code span."""
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    cell = f"`{render_value(value, field.annotation, list(field.metadata))}`"
    if name.endswith("_bytes") and isinstance(value, int):
        cell += _size_hint(value)
    return cell


# -- rows -----------------------------------------------------------------------------------------
def _doc_summary(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, on one line."""
    doc = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0]
    return " ".join(doc.split())


def _cell(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|").replace("\n", " ")


def _row(path: str, name: str, field: FieldInfo, note: str = "") -> Row:
    described = bool(field.description)
    text = field.description or FALLBACK.get(path, "")
    if not text:
        models, _ = _item_models(field.annotation)
        text = _doc_summary(models[0]) if len(models) == 1 else ""
    return Row(
        path=path,
        type=_cell(field_type(field)),
        default=field_default(name, field),
        description=_cell(note + text),
        described=described,
    )


def model_rows(
    model: type[BaseModel], prefix: str, skip: frozenset[str] = frozenset()
) -> list[Row]:
    """Rows for every key of ``model`` under ``prefix``, depth first, in declaration order."""
    rows: list[Row] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        path = f"{prefix}.{name}" if prefix else name
        rows.append(_row(path, name, field))
        models, suffix = _item_models(field.annotation)
        if len(models) == 1:
            rows.extend(model_rows(models[0], path + suffix))
        elif models:
            rows.extend(_variant_rows(models, path + suffix))
    return rows


def _variant_rows(models: list[type[BaseModel]], prefix: str) -> list[Row]:
    """Rows for a discriminated union: the shared ``type`` once, other keys marked per variant."""
    tags = {m: get_args(m.model_fields["type"].annotation)[0] for m in models}
    rows: list[Row] = []
    seen: set[str] = set()
    for model in models:
        for name, field in model.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            path = f"{prefix}.{name}"
            if name == "type":
                merged = FieldInfo.from_annotation(cast(Any, Literal[tuple(tags.values())]))
                merged.description = field.description
                rows.append(_row(path, name, merged))
                continue
            owners = [m for m in models if name in m.model_fields]
            note = "Only with " + ", ".join(f"`type: {tags[m]}`" for m in owners) + ". "
            rows.append(_row(path, name, field, note))
    return rows


@dataclass(frozen=True, slots=True)
class Section:
    """One table: a heading, the model's summary and its rows."""

    title: str
    summary: str
    rows: list[Row]


def sections() -> list[Section]:
    """Every table of the reference, in the order they are printed."""
    top = BastionConfig.model_fields
    scalar_top: list[Row] = []
    nested: list[Section] = []
    for name, field in top.items():
        scalar_top.append(_row(name, name, field))
        models, suffix = _item_models(field.annotation)
        if not models:
            continue
        model, path = models[0], name + suffix
        skip = frozenset(LayerSettings.model_fields) if model is RouteConfig else frozenset()
        rows = model_rows(model, path, skip)
        if model is RouteConfig:
            rows += [_row(f"{path}.{k}", k, f) for k, f in LayerSettings.model_fields.items()]
        nested.append(Section(f"`{path}`", _doc_summary(model), rows))
    defaults = FieldInfo.from_annotation(LayerSettings)
    defaults.default_factory = LayerSettings
    at_routes = next(i for i, r in enumerate(scalar_top) if r.path == "routes")
    scalar_top.insert(at_routes, _row("defaults", "defaults", defaults))
    out = [Section("Top level", _doc_summary(BastionConfig), scalar_top), *nested]
    for name, field in LayerSettings.model_fields.items():
        model = _item_models(field.annotation)[0][0]
        title = f"`defaults.{name}` and `routes[].{name}`"
        out.append(Section(title, _doc_summary(model), model_rows(model, f"defaults.{name}")))
    return out


def all_rows() -> Iterator[Row]:
    """Every row of every table."""
    for section in sections():
        yield from section.rows


def missing_descriptions() -> list[str]:
    """Paths of fields whose model gives no ``description`` (some are covered by FALLBACK)."""
    return [row.path for row in all_rows() if not row.described]


def render() -> str:
    """The generated part of configuration.md (between the markers, markers excluded)."""
    lines = [
        "",
        "<!-- Written by docs/gen_config_reference.py from the pydantic models: edit the",
        "     models' descriptions, then run the script. Do not edit by hand. -->",
        "",
    ]
    for section in sections():
        lines += [f"### {section.title}", "", section.summary, ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines += [
            f"| `{r.path}` | {r.type} | {r.default} | {r.description} |" for r in section.rows
        ]
        lines.append("")
    unsafe = [r.path for r in all_rows() if r.path.rsplit(".", 1)[-1].startswith("unsafe_")]
    lines += ["### Keys that weaken a default", ""]
    lines += [f"- `{p}`" for p in unsafe]
    lines.append("")
    return "\n".join(lines)


def update(text: str) -> str:
    """``text`` with the generated part replaced; ValueError if the markers are missing."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"expected one {BEGIN} … {END} block")
    return pattern.sub(lambda _: BEGIN + "\n" + render() + END, text)


def main(argv: list[str] | None = None) -> int:
    """Command line: rewrite the file, or with ``--check`` exit 1 when it is stale."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--missing", action="store_true", help="list fields without description")
    parser.add_argument("--file", type=Path, default=DOC, help="the Markdown file to update")
    args = parser.parse_args(argv)
    if args.missing:
        for path in missing_descriptions():
            print(path)
        return 0
    current = args.file.read_text(encoding="utf-8")
    try:
        wanted = update(current)
    except ValueError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if wanted != current:
            print(f"{args.file} is out of date: run python docs/gen_config_reference.py")
            return 1
        return 0
    if wanted != current:
        args.file.write_text(wanted, encoding="utf-8")
        print(f"wrote {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
