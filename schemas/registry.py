"""Which kinds exist: apiVersion, plural, short names, scope and Struct of each.

Every kind module registers its kinds here; the api, the store and the CLI look them up
by manifest (apiVersion + kind) or by any name kubectl accepts (pods, pod, po, Pod,
deployments.apps, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.meta import Object


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: str                      # "Deployment"
    api_versions: tuple[str, ...]  # accepted apiVersions, preferred first ("apps/v1",)
    plural: str                    # "deployments"
    type: type[Object]             # the Struct
    namespaced: bool = True
    short_names: tuple[str, ...] = field(default=())
    bucket: str = field(init=False, repr=False, compare=False)  # "kyb-deployments": read on every write

    def __post_init__(self) -> None:
        object.__setattr__(self, "bucket", f"kyb-{self.plural}")

    @property
    def api_version(self) -> str:
        return self.api_versions[0]

    @property
    def group(self) -> str:
        av = self.api_versions[0]
        return av.split("/", 1)[0] if "/" in av else ""

    @property
    def singular(self) -> str:
        return self.kind.lower()


class UnknownKind(LookupError):
    """No kind answers to this name or apiVersion/kind pair."""


_BY_KIND: dict[str, KindInfo] = {}
_BY_NAME: dict[str, KindInfo] = {}


def register(info: KindInfo) -> KindInfo:
    _BY_KIND[info.kind] = info
    names = {info.kind.lower(), info.plural, info.singular, *info.short_names}
    if info.group:
        names |= {f"{info.plural}.{info.group}", f"{info.singular}.{info.group}"}
    for name in names:
        _BY_NAME[name.lower()] = info
    return info


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
