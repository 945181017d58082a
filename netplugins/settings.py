"""
One declaration per setting.

A service's settings are a frozen attrs class: each field is declared once,
with its type, its default, its help text and the function that turns a
command-line string into its value.  Everything else derives from it:

  - the class itself is the service's typed keyword twin: a C{.tac} file
    writes C{echoService(EchoSettings(framing="line", listen=("tcp:7007",)))}
    and mypy checks it;
  - its fields validate Python values with the same function the command
    line parses strings with, so C{EchoSettings(maxMessageSize=0)} and
    C{--max-message-size 0} are refused alike, in one line;
  - L{netplugins.options.ServiceOptions} builds a plugin's C{twistd} options
    (C{optParameters}, C{optFlags}, a repeatable C{--name} for tuple fields,
    the C{--help} text) from the class named by its C{settingsType}, and
    makes the instance from the parsed command line (L{fromOptions}).

A field reads::

    @frozen(kw_only=True)
    class EchoSettings(ServiceSettings):
        framing: str = setting("raw", "What a message is.", framingChoice)
        maxMessageSize: int = setting(
            DEFAULT_MAX_MESSAGE_SIZE,
            "The longest line, netstring or block accepted, in bytes.",
            positiveInt,
        )

The option's name is the field's, in dashes (C{maxMessageSize} is
C{--max-message-size}, C{listenTLS} C{--listen-tls}) unless C{option=} names
it.  C{docs/adding-a-service.md} shows the whole recipe.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from attrs import frozen

#: The key of a field's L{Setting} in its attrs metadata.
_KEY = "netplugins.setting"

_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def optionName(attribute: str) -> str:
    """
    The command-line name of a field: C{maxMessageSize} is
    C{max-message-size}, C{tlsClientCA} is C{tls-client-ca}.
    """
    return _WORD_BREAK.sub("-", attribute).lower()


@frozen
class Setting:
    """
    How one field appears on the command line.

    @ivar help: the C{--help} text.
    @ivar coerce: turns a command-line string into the value (raising
        L{ValueError} with a one-line message); also checks values given in
        Python.  C{None}: the string is the value.
    @ivar kind: C{"parameter"}, C{"flag"} (a boolean, true when given) or
        C{"repeated"} (a tuple, one item per time the option is given).
    @ivar option: the option's name, when not the field's in dashes.
    @ivar short: a one-letter synonym.
    """

    help: str
    coerce: Callable[[str], Any] | None = None
    kind: str = "parameter"
    option: str | None = None
    short: str | None = None

    def name(self, attribute: str) -> str:
        return self.option or optionName(attribute)


def _check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    declared: Setting = attribute.metadata[_KEY]
    if declared.coerce is None or value is None:
        return
    values = value if declared.kind == "repeated" else (value,)
    for each in values:
        try:
            declared.coerce(each if isinstance(each, str) else str(each))
        except ValueError as e:
            raise ValueError(f"--{declared.name(attribute.name)}: {e}") from None


def setting(
    default: Any,
    help: str,
    coerce: Callable[[str], Any] | None = None,
    *,
    option: str | None = None,
    short: str | None = None,
) -> Any:
    """
    A field that is an option with a value (C{--name VALUE}).
    """
    return attrs.field(
        default=default,
        validator=_check,
        metadata={_KEY: Setting(help, coerce, "parameter", option, short)},
    )


def flag(help: str, *, option: str | None = None, short: str | None = None) -> Any:
    """
    A boolean field that is an option without a value, false unless given.
    """
    return attrs.field(
        default=False,
        converter=bool,
        metadata={_KEY: Setting(help, None, "flag", option, short)},
    )


def repeated(
    help: str,
    coerce: Callable[[str], Any] | None = None,
    *,
    option: str | None = None,
) -> Any:
    """
    A tuple field whose option may be given several times, each adding one
    item.
    """
    return attrs.field(
        factory=tuple,
        converter=tuple,
        validator=_check,
        metadata={_KEY: Setting(help, coerce, "repeated", option, None)},
    )


def override(base: type, name: str, default: Any, *, help: str | None = None) -> Any:
    """
    A field that is C{base}'s field C{name} with another default, or another
    C{--help} text: how a service changes a shared setting (np-echo's idle
    timeout, what np-imap's C{--allow-plaintext-auth} allows) without
    declaring it again.
    """
    inherited = attrs.fields_dict(base)[name]
    metadata = dict(inherited.metadata)
    if help is not None:
        metadata[_KEY] = attrs.evolve(metadata[_KEY], help=help)
    return attrs.field(
        default=default,
        validator=inherited.validator,
        converter=inherited.converter,
        metadata=metadata,
    )


def declared(cls: type) -> list[tuple[attrs.Attribute[Any], Setting]]:
    """
    The fields of the settings class C{cls} that are options, in order.
    """
    return [
        (field, field.metadata[_KEY])
        for field in attrs.fields(cls)
        if _KEY in field.metadata
    ]


def ownDeclared(
    cls: type, base: type | None
) -> list[tuple[attrs.Attribute[Any], Setting]]:
    """
    The option fields C{cls} declares beyond those of C{base}.
    """
    inherited = (
        {field.name for field in attrs.fields(base)} if base is not None else set()
    )
    return [(f, s) for f, s in declared(cls) if f.name not in inherited]


def commandLine(
    fields: Iterable[tuple[attrs.Attribute[Any], Setting]],
) -> tuple[list[list[Any]], list[list[Any]], dict[str, Setting]]:
    """
    C{usage.Options} declarations for C{fields}: its C{optParameters}, its
    C{optFlags}, and the repeated options (by name), which need an C{opt_}
    method each.
    """
    parameters: list[list[Any]] = []
    flags: list[list[Any]] = []
    repeats: dict[str, Setting] = {}
    for field, declaration in fields:
        name = declaration.name(field.name)
        if declaration.kind == "flag":
            flags.append([name, declaration.short, declaration.help])
        elif declaration.kind == "repeated":
            repeats[name] = declaration
        else:
            parameters.append(
                [
                    name,
                    declaration.short,
                    field.default,
                    declaration.help,
                    declaration.coerce,
                ]
            )
    return parameters, flags, repeats


def fromOptions(cls: type, values: Mapping[str, Any], **extra: Any) -> Any:
    """
    An instance of the settings class C{cls} from a parsed command line:
    each option field takes the option's value (C{None} for an option whose
    default is C{None} leaves the field's default), C{extra} the rest.

    @raise ValueError: from the class's validators.
    """
    arguments: dict[str, Any] = {}
    for field, declaration in declared(cls):
        name = declaration.name(field.name)
        if name not in values:
            continue
        value = values[name]
        if declaration.kind == "repeated":
            value = tuple(value)
        if value is None and field.default is not None:
            continue
        arguments[field.name] = value
    arguments.update(extra)
    return cls(**arguments)
