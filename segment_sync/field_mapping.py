"""What a sync maps into an event, as declared: dotted target names, columns, static values and templates, as a tree.

A target name's dots nest (`address.city` is `{"address": {"city": ...}}`); a backslash keeps the next
character literal (`utm\\.source` is the key `utm.source`, `a\\\\b` the key `a\\b`). A template's `{column}`
is that column's value as text, `{{` and `}}` are literal braces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StaticValue(BaseModel):
    """A constant sent as it is: any JSON value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    static: Any = Field(description="The value sent for every row: text, number, boolean, null, list or object.")

    @field_validator("static")
    @classmethod
    def _json(cls, value: Any) -> Any:
        check_json(value)
        return value


class TemplateValue(BaseModel):
    """Text made from columns: `{column}` is the column's value, `{{` and `}}` are braces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = Field(description='Text with {column} references, e.g. "{first_name} {last_name}".')


def check_json(value: Any) -> None:
    """Raise ValueError unless a value is JSON: text, a number, true/false, null, lists and objects of them."""
    if isinstance(value, list):
        for item in value:
            check_json(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"object keys must be text, not {key!r}")
            check_json(item)
    elif not isinstance(value, str | int | float | bool | None):
        raise ValueError(f"{value!r} is not a JSON value; quote it to send it as text")


FieldSource: TypeAlias = str | StaticValue | TemplateValue
SOURCE_HELP = 'a column name, {static: <any JSON value>} or {template: "text with {column}"}'


@dataclass(frozen=True)
class Column:
    """A model column's value, its JSON as the content holds it."""

    name: str


@dataclass(frozen=True)
class Static:
    """A constant, as declared (any JSON value)."""

    value: Any


@dataclass(frozen=True)
class Template:
    """Literal texts and column references, in order."""

    parts: tuple[str | Column, ...]

    @property
    def columns(self) -> list[str]:
        """The columns the template reads, in order of first use."""
        return list(dict.fromkeys(p.name for p in self.parts if isinstance(p, Column)))


Source: TypeAlias = Column | Static | Template
Tree: TypeAlias = dict[str, "Source | Tree"]


@dataclass(frozen=True)
class FieldMapping:
    """One mapped value: its name as declared, its path in the object, and where its value comes from."""

    name: str
    path: tuple[str, ...]
    source: Source


def target_path(name: str) -> tuple[str, ...]:
    """The keys a target name nests into: split at dots, a backslash keeping the next character literal."""
    keys, key, escaped = [], [], False
    for char in name:
        if escaped:
            key.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            keys.append("".join(key))
            key = []
        else:
            key.append(char)
    if escaped:
        raise ValueError("ends with a backslash; write \\\\ for a literal backslash, \\. for a literal dot")
    keys.append("".join(key))
    if any(not k for k in keys):
        raise ValueError("has an empty part (a leading, trailing or double dot); write \\. for a literal dot")
    return tuple(keys)


def parse_template(text: str) -> Template:
    """A template's literal texts and column references; raises ValueError naming what is wrong."""
    parts: list[str | Column] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "{}" and text[i : i + 2] == char * 2:
            literal.append(char)
            i += 2
        elif char == "{":
            end = text.find("}", i)
            name = text[i + 1 : end] if end != -1 else ""
            if end == -1 or "{" in name:
                raise ValueError(f"has an unclosed '{{' at character {i + 1}; write {{{{ for a literal brace")
            if not name.strip():
                raise ValueError(f"has an empty reference '{{}}' at character {i + 1}; name a column inside it")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(Column(name))
            i = end + 1
        elif char == "}":
            raise ValueError(f"has a '}}' without '{{' at character {i + 1}; write }}}} for a literal brace")
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append("".join(literal))
    return Template(tuple(parts))


def source_of(value: FieldSource) -> Source:
    """The source a declared field value stands for."""
    if isinstance(value, StaticValue):
        return Static(value.static)
    if isinstance(value, TemplateValue):
        return parse_template(value.template)
    return Column(value)


def mappings_of(declared: Mapping[str, FieldSource], setting: str) -> list[FieldMapping]:
    """The mappings of a `fields` or `context` block; raises ValueError naming the setting and the target."""
    mappings = []
    for name, value in declared.items():
        try:
            mappings.append(FieldMapping(name, target_path(name), source_of(value)))
        except ValueError as exc:
            what = "template" if isinstance(value, TemplateValue) else "name"
            raise ValueError(f"{setting}.{name}: the {what} {exc}") from None
    tree_of(mappings, setting)
    return mappings


def tree_of(mappings: Iterable[FieldMapping], setting: str) -> Tree:
    """The mappings nested by path, keys in declared order; raises ValueError when two mappings collide."""
    tree: Tree = {}
    owners: dict[tuple[str, ...], str] = {}
    for mapping in mappings:
        node = tree
        for depth, key in enumerate(mapping.path):
            prefix = mapping.path[: depth + 1]
            last = depth == len(mapping.path) - 1
            held = node.get(key)
            if held is not None and (last or not isinstance(held, dict)):
                raise ValueError(
                    f"{setting}: {mapping.name!r} and {owners[prefix]!r} both set {'.'.join(prefix)!r}; a value "
                    "cannot also hold nested fields. Rename one, or write \\. for a literal dot in a name"
                )
            if last:
                node[key] = mapping.source
            else:
                node = node.setdefault(key, {})  # type: ignore[assignment]
            owners.setdefault(prefix, mapping.name)
    return tree


def columns_of(mappings: Iterable[FieldMapping]) -> list[str]:
    """The model columns the mappings read, in order of first use."""
    names: list[str] = []
    for mapping in mappings:
        source = mapping.source
        names += [source.name] if isinstance(source, Column) else source.columns if isinstance(source, Template) else []
    return list(dict.fromkeys(names))
