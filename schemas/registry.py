"""Which kinds exist: apiVersion, plural, short names, scope and Struct of each.

Every kind module registers its kinds here; the api, the store and the CLI look them up
by manifest (apiVersion + kind) or by any name kubectl accepts (pods, pod, po, Pod,
deployments.apps, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.meta import Object


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: str                      # "Deployment"
    api_versions: tuple[str, ...]  # accepted apiVersions, preferred first ("apps/v1",)
    plural: str                    # "deployments"
    type: type[Object]             # the Struct
    namespaced: bool = True
    short_names: tuple[str, ...] = field(default=())
    singular_name: str = ""        # when not the kind in lower case (a CRD's spec.names.singular)
    custom: Any = field(default=None, repr=False, compare=False)  # schemas.apiextensions.CustomKind
    bucket_name: str = ""          # when not kyb-<plural> (a custom kind's)
    bucket: str = field(init=False, repr=False, compare=False)  # "kyb-deployments": read on every write

    def __post_init__(self) -> None:
        object.__setattr__(self, "bucket", self.bucket_name or f"kyb-{self.plural}")

    @property
    def api_version(self) -> str:
        return self.api_versions[0]

    @property
    def group(self) -> str:
        av = self.api_versions[0]
        return av.split("/", 1)[0] if "/" in av else ""

    @property
    def singular(self) -> str:
        return self.singular_name or self.kind.lower()


class UnknownKind(LookupError):
    """No kind answers to this name or apiVersion/kind pair."""


_BY_KIND: dict[str, KindInfo] = {}
_BY_NAME: dict[str, KindInfo] = {}


_GENERATION = [0]  # bumped whenever the kinds change (a CustomResourceDefinition came or went)


def _names(info: KindInfo) -> set[str]:
    names = {info.kind.lower(), info.plural, info.singular, *info.short_names}
    if info.group:
        names |= {f"{info.plural}.{info.group}", f"{info.singular}.{info.group}"}
    return {n.lower() for n in names}


def register(info: KindInfo) -> KindInfo:
    _BY_KIND[info.kind] = info
    for name in _names(info):
        _BY_NAME[name] = info
    _GENERATION[0] += 1
    return info


def clash(info: KindInfo) -> str | None:
    """Why a custom kind cannot be served beside the kinds registered now (a kind or a name
    another kind answers to), or None."""
    _load()
    have = _BY_KIND.get(info.kind)
    if have is not None and have.custom is None:
        return f'kind "{info.kind}" is a built-in kind'
    if have is not None and have.custom is not None and have.custom.crd != info.custom.crd:
        return f'kind "{info.kind}" is already served by customresourcedefinition "{have.custom.crd}"'
    for name in sorted(_names(info)):
        other = _BY_NAME.get(name)
        if other is not None and other.kind != info.kind:
            return f'"{name}" is already in use by kind "{other.kind}"'
    return None


def register_custom(info: KindInfo) -> bool:
    """Serve a custom kind (replacing the one of the same CRD); False when it clashes."""
    if clash(info) is not None:
        return False
    old = _BY_KIND.get(info.kind)
    if old is not None:
        _drop(old)
    register(info)
    return True


def unregister_custom(crd: str) -> KindInfo | None:
    """Stop serving the kind CRD ``crd`` made; the kind, or None when it was not served."""
    _load()
    for info in list(_BY_KIND.values()):
        if info.custom is not None and info.custom.crd == crd:
            _drop(info)
            _GENERATION[0] += 1
            return info
    return None


def _drop(info: KindInfo) -> None:
    if _BY_KIND.get(info.kind) is info:
        del _BY_KIND[info.kind]
    for name, have in list(_BY_NAME.items()):
        if have is info:
            del _BY_NAME[name]


def generation() -> int:
    """Changes whenever a kind comes or goes: caches of what is served key on it."""
    return _GENERATION[0]


def _load() -> None:
    # Importing the kind modules registers their kinds.
    import schemas.kinds  # noqa: F401


def all_kinds() -> list[KindInfo]:
    _load()
    return sorted(_BY_KIND.values(), key=lambda k: k.plural)


def by_kind(kind: str) -> KindInfo:
    _load()
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise UnknownKind(f'no kind "{kind}" is registered') from None


def resolve(name: str) -> KindInfo:
    """A kind by any name a kubectl user types: plural, singular, short name, Kind, plural.group."""
    _load()
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise UnknownKind(f'the server doesn\'t have a resource type "{name}"') from None


def for_manifest(api_version: str, kind: str) -> KindInfo:
    """The kind a manifest names; both the kind and its apiVersion must be known."""
    _load()
    info = _BY_KIND.get(kind)
    if info is None:
        raise UnknownKind(f'no matches for kind "{kind}" in version "{api_version}"')
    if api_version not in info.api_versions:
        raise UnknownKind(
            f'no matches for kind "{kind}" in version "{api_version}" (known: {", ".join(info.api_versions)})'
        )
    return info
