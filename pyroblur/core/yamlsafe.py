"""YAML loading that cannot be made to expand without bound ("billion laughs").

PyYAML's ``safe_load`` shares aliased nodes, so loading a bomb is cheap; what explodes is
everything after it (validation, ``model_dump``, ``json.dumps``) walking the shared structure
as a tree. :func:`load_yaml` composes the node graph first, counts the nodes it stands for once
every alias is expanded (memoised per node, so the count itself is cheap), and refuses the
document before constructing any Python object when that count or the number of aliases is
over budget. Recursive aliases are refused too.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pyroblur.core.errors import InputError

#: Nodes a document may stand for with every alias expanded. Real configs have a few hundred.
MAX_EXPANDED_NODES = 100_000
#: Alias uses per document (``*name``); real configs use a handful (``<<: *defaults``).
MAX_ALIASES = 1_000


class UnsafeYamlError(InputError):
    """A YAML document whose aliases expand beyond the budget, or refer to themselves."""


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader that counts alias events while composing."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # type: ignore[override]
        if self.check_event(AliasEvent):
            self.aliases += 1
            if self.aliases > self.max_aliases:
                raise UnsafeYamlError(
                    f"more than {self.max_aliases} YAML aliases",
                    subject=self.source,
                    hint="anchors/aliases are limited; write the values out",
                )
        return super().compose_node(parent, index)

    max_aliases = MAX_ALIASES
    source = "<yaml>"


def _refuse_duplicate_keys(node: MappingNode, source: str) -> None:
    """PyYAML keeps the last of two equal keys without a word (a second ``train:`` block
    wiped the first); refuse instead, naming the key and both lines."""
    seen: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1
        if key.value in seen:
            raise UnsafeYamlError(
                f"duplicate key {key.value!r} on lines {seen[key.value]} and {line}: the second would "
                "silently replace the first",
                subject=source,
                hint="merge the two blocks into one",
            )
        seen[key.value] = line


def _expanded_size(root: Node, budget: int, source: str) -> int:
    """Nodes ``root`` stands for with aliases expanded; raises past ``budget`` or on a cycle."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise UnsafeYamlError("recursive YAML alias", subject=source, hint="an anchor cannot contain itself")
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
            _refuse_duplicate_keys(node, source)
        else:
            children = []
        for child in children:
            total += size(child)
            if total > budget:
                raise UnsafeYamlError(
                    f"YAML aliases expand to more than {budget:,} nodes (an alias bomb?)",
                    subject=source,
                    hint="anchors/aliases are limited; write the values out",
                )
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


def load_yaml(
    text: str | bytes,
    *,
    source: str = "<yaml>",
    max_nodes: int = MAX_EXPANDED_NODES,
    max_aliases: int = MAX_ALIASES,
) -> Any:
    """Parse one YAML document safely (``yaml.safe_load`` semantics) within an expansion budget.

    Returns ``None`` for an empty document. Raises :class:`UnsafeYamlError` (names ``source``)
    for alias bombs and recursive aliases, and ``yaml.YAMLError`` for invalid YAML.
    """
    loader = _CountingLoader(text)
    loader.max_aliases = max_aliases
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, max_nodes, source)
        return loader.construct_document(node)
    except RecursionError:
        raise UnsafeYamlError("YAML nested too deeply", subject=source) from None
    finally:
        loader.dispose()
