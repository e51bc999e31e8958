"""`RuleSet`: which rule each layer class uses.

A rule set is a table from classes to rules, looked up along the layer class's MRO
(nearest registered base class wins), optionally on top of a parent set. A class
may also be named as `"module:QualifiedName"`, so a rule for a class of an optional
package (keras-hub) costs no import: it applies once such a class is looked up. Every
graph carries the set it was lifted with (`graph.rules`); `kgraph.lift(model,
rules=...)` and `graph.apply(..., rules=...)` take another one, as Torch-Pruning
takes customised pruners per dependency graph. `kgraph.register_rule` adds to the
default set, which every graph uses unless told otherwise.

Example:
    >>> rules = kgraph.rules.DEFAULT_RULES.extended({MyScale: ScaleRule()})
    >>> graph = kgraph.lift(model, rules=rules)      # only this graph knows MyScale
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kgraph.errors import KGraphError
from kgraph.ir import Node
from kgraph.rules.base import NestedRule, OpaqueRule, Rule

__all__ = ["RuleSet", "class_key"]

_OPAQUE = OpaqueRule()


def class_key(layer_class: type) -> str:
    """`"module:QualifiedName"`, how a table names `layer_class` without importing it."""
    return f"{layer_class.__module__}:{layer_class.__qualname__}"


def _instance(layer_class: Any, rule: Rule | type[Rule]) -> Rule:
    named = isinstance(layer_class, str) and ":" in layer_class
    if not isinstance(layer_class, type) and not named:
        raise KGraphError(
            f"a rule is registered for a class (or its 'module:QualifiedName'), got {layer_class!r}"
        )
    instance = rule() if isinstance(rule, type) else rule
    if not isinstance(instance, Rule):
        raise KGraphError(
            f"a rule must be a kgraph.rules.Rule (or a subclass of it), got "
            f"{type(instance).__name__} for {layer_class}"
        )
    return instance


class RuleSet:
    """A table of rules by layer class, on top of an optional `parent` set.

    Args:
        table: class -> rule (a `Rule` instance or a `Rule` subclass to instantiate).
        parent: the set asked for classes this table does not cover.
    """

    def __init__(
        self,
        table: Mapping[type | str, Rule | type[Rule]] | None = None,
        *,
        parent: RuleSet | None = None,
    ) -> None:
        self._table: dict[type | str, Rule] = {}
        self._bound: dict[int, Rule] = {}
        self.parent = parent
        for layer_class, rule in (table or {}).items():
            self._table[layer_class] = _instance(layer_class, rule)

    def _own(self, layer_class: type) -> Rule | None:
        found = self._table.get(layer_class)
        if found is None and self._table:
            found = self._table.get(class_key(layer_class))
        if found is None and self.parent is not None:
            found = self.parent._own(layer_class)
        return found

    def rule_for_class(self, layer_class: type | None) -> Rule:
        """The rule of the nearest registered class in `layer_class`'s MRO (else opaque)."""
        if layer_class is None:
            return _OPAQUE
        for klass in layer_class.__mro__:
            rule = self._own(klass)
            if rule is not None:
                return self._bind(rule)
        return _OPAQUE

    def rule_for(self, node: Node) -> Rule:
        """The rule for `node`'s class."""
        return self.rule_for_class(node.cls)

    def _bind(self, rule: Rule) -> Rule:
        if not isinstance(rule, NestedRule):
            return rule
        bound = self._bound.get(id(rule))
        if bound is None:
            bound = self._bound[id(rule)] = rule.within(self)
        return bound

    def register(self, layer_class: type | str, rule: Rule | type[Rule] | None = None) -> Any:
        """Use `rule` for `layer_class` and its subclasses in this set (a decorator when
        `rule` is None). Returns `rule`."""

        def install(value: Rule | type[Rule]) -> Rule | type[Rule]:
            self._table[layer_class] = _instance(layer_class, value)
            self._bound.clear()
            return value

        if rule is None:
            if not isinstance(layer_class, (type, str)):
                raise KGraphError(f"a rule is registered for a class, got {layer_class!r}")
            return install
        return install(rule)

    def unregister(self, layer_class: type | str) -> None:
        """Forget this set's rule for exactly `layer_class` (if any)."""
        self._table.pop(layer_class, None)
        self._bound.clear()

    def extended(self, table: Mapping[type | str, Rule | type[Rule]]) -> RuleSet:
        """A new set with `table`'s rules on top of this one (this set is not changed)."""
        return RuleSet(table, parent=self)

    def classes(self) -> Iterator[type | str]:
        """Every class (or class name) with a rule in this set or its parents."""
        seen = set(self._table)
        yield from self._table
        if self.parent is not None:
            yield from (c for c in self.parent.classes() if c not in seen)

    def __contains__(self, layer_class: object) -> bool:
        """Whether exactly `layer_class` (not a base class of it) has a rule here."""
        return isinstance(layer_class, type) and self._own(layer_class) is not None

    def __repr__(self) -> str:
        return f"<RuleSet: {len(self._table)} rules{' + parent' if self.parent else ''}>"
