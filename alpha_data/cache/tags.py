"""Tags: the names that connect cached reads to the rows that can change them.

A tag is ``<namespace>:<field>:<part>`` (``users:username:ana``), a constant
(``alerts:open``) or a table epoch (``positions:*``). A cached read carries
the tags its result depends on; a write dirties the tags of every row it
touches. Both sides build tags with the same ``TagSpec`` objects, declared
next to the repository that owns the rows::

    USER_ID = TagSpec("users", "id")
    invalidated_by(User, USER_ID, USER_NAME, USER_EMAIL)    # rows → tags
    @cached(USER_ID)                                          # read → tags
    async def get(self, id: int) -> User | None: ...

Models with no ``invalidated_by`` declaration are covered by their table
epoch: any write to them invalidates every cached read of their table.
Declarations compose: each ``invalidated_by`` adds its specs to the model's
rule (an application adding a cached read over ``User`` keeps the library's
``User`` tags). The library declares its own rules when a ``Database`` is
built (``alpha_data.repositories.rules.register_rules``), not on import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect

from alpha_data.cache.keys import Unkeyable, part

__all__ = [
    "RowRule",
    "TagSpec",
    "as_spec",
    "entity_keys",
    "epoch",
    "invalidated_by",
    "register_entity_key",
    "row_rule",
    "row_tags",
    "table_is_cached",
    "table_name",
]


def table_name(model: type[Any]) -> str:
    """The name of the table ``model`` is mapped to."""
    table: Any = inspect(model).local_table
    return str(table.name)


def epoch(table: str) -> str:
    """The tag every cached read of ``table`` carries (bumped by untracked writes)."""
    return f"{table}:*"


@dataclass(frozen=True)
class TagSpec:
    """``<namespace>:<field>:<value>``, the value read from an argument or a column.

    ``source`` names the argument (reads) or attribute (rows) holding the
    value; it defaults to ``field``. ``normalize`` maps the value first (it
    may raise Unkeyable to opt a value out of caching). A spec with
    ``constant=True`` is the fixed tag ``<namespace>:<field>``.
    """

    namespace: str
    field: str
    source: str | None = None
    normalize: Callable[[Any], Any] | None = None
    constant: bool = False

    @property
    def attribute(self) -> str:
        """The argument or attribute the value comes from."""
        return self.source or self.field

    def of(self, source: str) -> TagSpec:
        """The same tag, with its value taken from ``source``."""
        return TagSpec(self.namespace, self.field, source, self.normalize, self.constant)

    def tag(self, value: Any = None) -> str:
        """The tag for ``value`` (ignored for constants); raises Unkeyable."""
        if self.constant:
            return f"{self.namespace}:{self.field}"
        if self.normalize is not None and value is not None:
            value = self.normalize(value)
        return f"{self.namespace}:{self.field}:{part(value)}"


@dataclass(frozen=True)
class RowRule:
    """The tags a row of one model dirties when it is inserted, updated or deleted."""

    specs: tuple[TagSpec, ...]

    def tags(self, values: Callable[[str], Iterable[Any] | None]) -> Iterator[str]:
        """Tags for a row whose attribute values ``values(name)`` gives (None: unknown).

        Raises LookupError when a value the rule needs is unknown.
        """
        for spec in self.specs:
            if spec.constant:
                yield spec.tag()
                continue
            found = values(spec.attribute)
            if found is None:
                raise LookupError(spec.attribute)
            for value in found:
                try:
                    yield spec.tag(value)
                except Unkeyable:
                    continue  # no cached read can carry an unkeyable tag


@dataclass
class _Registry:
    rules: dict[type[Any], RowRule] = field(default_factory=dict)
    tables: dict[str, RowRule] = field(default_factory=dict)
    keys: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)


_registry = _Registry()


def invalidated_by(model: type[Any], *specs: TagSpec | str) -> None:
    """Add to the tags a row of ``model`` dirties (none given: no cached read uses it yet).

    A plain string is a constant tag (``"alerts:open"``). Rules compose:
    specs declared earlier (by the library or another module) stay, and
    declaring the same spec again changes nothing.
    """
    added = tuple(as_spec(s) for s in specs)
    known = _registry.rules.get(model)
    merged = known.specs if known is not None else ()
    merged += tuple(dict.fromkeys(s for s in added if s not in merged))
    rule = RowRule(merged)
    _registry.rules[model] = rule
    _registry.tables[table_name(model)] = rule


def row_rule(model: type[Any]) -> RowRule | None:
    """The declared rule of ``model`` (or its nearest mapped base), else None."""
    for cls in model.__mro__:
        rule = _registry.rules.get(cls)
        if rule is not None:
            return rule
    return None


def row_tags(model: type[Any], values: Callable[[str], Iterable[Any] | None]) -> list[str]:
    """Tags dirtied by a row of ``model`` whose (old and new) values ``values(name)`` gives.

    Without a rule, or when a value the rule needs is unknown (None), the
    table epoch: every cached read of the table.
    """
    rule = row_rule(model)
    if rule is not None:
        try:
            return list(rule.tags(values))
        except LookupError:
            pass
    return [epoch(table_name(model))]


def table_is_cached(table: str) -> bool:
    """False only for tables whose model declared that no cached read uses it."""
    rule = _registry.tables.get(table)
    return rule is None or bool(rule.specs)


def register_entity_key(spec: TagSpec, entity: str, method: str) -> None:
    """Record that ``<entity>:<method>:<part>`` is keyed by exactly ``spec``'s value."""
    entries = _registry.keys.setdefault((spec.namespace, spec.field), [])
    if (entity, method) not in entries:
        entries.append((entity, method))


def entity_keys(tag: str) -> Iterator[str]:
    """The ``<entity>:<method>:<part>`` keys (without prefix) that ``tag`` names exactly."""
    namespace, _, rest = tag.partition(":")
    name, _, value = rest.partition(":")
    if not value:
        return
    for entity, method in _registry.keys.get((namespace, name), ()):
        yield f"{entity}:{method}:{value}"


def as_spec(spec: TagSpec | str) -> TagSpec:
    """``spec`` itself, or the constant TagSpec for a ``"namespace:name"`` string."""
    if isinstance(spec, TagSpec):
        return spec
    namespace, _, name = spec.partition(":")
    if not namespace or not name:
        raise ValueError(f"constant tag {spec!r} must look like 'namespace:name'")
    return TagSpec(namespace, name, constant=True)
