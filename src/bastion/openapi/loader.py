"""Reading OpenAPI documents and resolving ``$ref`` pointers between them.

A document comes from a file (YAML or JSON) or an ``https://`` URL; ``http://`` is accepted
only for a loopback host and only with ``unsafe_allow_http``. A ``$ref`` may point into the same
document (``#/components/…``) or, for a document read from a file, into another file relative
to it (``common.yaml#/Error``). Remote references are refused: a spec fetched at start-up must
not make the gateway fetch more from wherever its authors pointed.

Problems are reported as ``location: message`` lines, the location written as
``file: paths['/users/{id}'].get.parameters[0]``.
"""

from __future__ import annotations

import ipaddress
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import yaml

#: A position in a document: (document id, path of keys and indexes from its root).
Where = tuple[str, tuple[str | int, ...]]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_FILES = 64
_REF_HOPS = 32


class SpecProblem(Exception):
    """One problem with a document; ``str()`` is the message without a location."""


class _Loader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """Safe YAML without implicit timestamps: ``2024-01-01`` stays a string, as in JSON."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_text(data: bytes, label: str) -> Any:
    """Parse ``data`` as JSON (when it looks like JSON) or YAML; SpecProblem on errors."""
    stripped = data.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SpecProblem(f"{label}: invalid JSON: {exc}") from None
    try:
        return yaml.load(data, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpecProblem(f"{label}{where}: {problem}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_url(url: str, unsafe_allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and is_loopback(parts.hostname or ""):
        if unsafe_allow_http:
            return
        raise SpecProblem(f"{url}: plain http needs unsafe_allow_http_spec: true")
    raise SpecProblem(f"{url}: only https:// URLs (or http:// on loopback) are accepted")


def fetch_url(url: str, *, timeout: float, max_bytes: int, unsafe_allow_http: bool) -> bytes:
    """GET ``url`` with a timeout and a size cap; redirects must satisfy the same scheme rule."""
    _check_url(url, unsafe_allow_http)

    class _Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(
            self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
        ) -> urllib.request.Request | None:
            _check_url(newurl, unsafe_allow_http)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.build_opener(
        _Redirects, urllib.request.HTTPSHandler(context=ssl.create_default_context())
    )
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, headers={"Accept": "application/yaml, application/json;q=0.9, */*;q=0.1"}
    )
    try:
        with opener.open(request, timeout=timeout) as resp:
            data: bytes = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise SpecProblem(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SpecProblem(f"{url}: cannot fetch: {reason}") from None
    if len(data) > max_bytes:
        raise SpecProblem(f"{url}: larger than {max_bytes} bytes")
    return data


def read_file(path: Path, max_bytes: int) -> bytes:
    """Read ``path`` whole, refusing files larger than ``max_bytes``."""
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise SpecProblem(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise SpecProblem(f"{path}: larger than {max_bytes} bytes")
    return data


def _segment(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    if part.lstrip("$").replace("_", "a").replace("-", "a").isalnum() and not part[:1].isdigit():
        return f".{part}"
    return f"[{part!r}]"


def child(node: Any, key: str | int) -> Any:
    """``node[key]`` for a mapping or list; a YAML integer key (``200:``) matches ``"200"``."""
    if isinstance(node, list):
        if isinstance(key, int) or key.isdigit():
            i = int(key)
            if 0 <= i < len(node):
                return node[i]
        raise KeyError(key)
    if isinstance(node, dict):
        if key in node:
            return node[key]
        if isinstance(key, str) and key.isdigit() and int(key) in node:
            return node[int(key)]
    raise KeyError(key)


class Documents:
    """The root document and every file its ``$ref``s reach, loaded once each."""

    def __init__(
        self,
        root_id: str,
        root: Any,
        *,
        label: str,
        from_url: bool,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.root_id = root_id
        self._docs: dict[str, Any] = {root_id: root}
        self._labels: dict[str, str] = {root_id: label}
        self._from_url = from_url
        self._max_bytes = max_bytes
        self._base = Path(root_id).parent if not from_url else None

    @property
    def root(self) -> Any:
        return self._docs[self.root_id]

    def label(self, doc_id: str) -> str:
        return self._labels.get(doc_id, doc_id)

    def loc(self, where: Where) -> str:
        """``where`` for a problem line: ``file: paths['/a'].get.parameters[0]``."""
        doc_id, parts = where
        text = "".join(_segment(p) for p in parts).lstrip(".")
        return f"{self.label(doc_id)}: {text}" if text else self.label(doc_id)

    def _load(self, target: Path) -> str:
        doc_id = str(target)
        if doc_id in self._docs:
            return doc_id
        if len(self._docs) >= MAX_FILES:
            raise SpecProblem(f"more than {MAX_FILES} files referenced")
        data = read_file(target, self._max_bytes)
        label = str(target)
        if self._base is not None and target.is_relative_to(self._base):
            label = str(target.relative_to(self._base))
        self._docs[doc_id] = parse_text(data, label)
        self._labels[doc_id] = label
        return doc_id

    def resolve(self, ref: Any, where: Where) -> tuple[Any, Where]:
        """The node ``ref`` (written at ``where``) points to, and its position."""
        if not isinstance(ref, str):
            raise SpecProblem("$ref must be a string")
        file_part, _, fragment = ref.partition("#")
        doc_id = where[0]
        if file_part:
            if urlsplit(file_part).scheme or file_part.startswith("//"):
                raise SpecProblem(f"remote $ref {ref!r} refused (only local files)")
            if self._from_url:
                raise SpecProblem(
                    f"$ref {ref!r} in a document fetched from a URL would be remote: refused"
                )
            doc_id = self._load((Path(doc_id).parent / unquote(file_part)).resolve())
        fragment = unquote(fragment)
        if fragment and not fragment.startswith("/"):
            raise SpecProblem(f"$ref {ref!r}: only JSON-pointer fragments (#/…) are supported")
        parts: list[str | int] = []
        node = self._docs[doc_id]
        for raw in fragment.split("/")[1:] if fragment else []:
            key = raw.replace("~1", "/").replace("~0", "~")
            parent = node
            try:
                node = child(parent, key)
            except KeyError:
                raise SpecProblem(f"$ref {ref!r} does not resolve: no {key!r}") from None
            parts.append(int(key) if isinstance(parent, list) else key)
        return node, (doc_id, tuple(parts))

    def deref(self, node: Any, where: Where) -> tuple[Any, Where]:
        """Follow ``$ref`` (for objects that are not schemas) until a plain object."""
        seen: set[Where] = set()
        for _ in range(_REF_HOPS):
            if not (isinstance(node, dict) and "$ref" in node):
                return node, where
            node, target = self.resolve(node["$ref"], where)
            if target in seen:
                raise SpecProblem("$ref cycle")
            seen.add(target)
            where = target
        raise SpecProblem(f"more than {_REF_HOPS} chained $refs")
