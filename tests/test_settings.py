"""
Tests for L{netplugins.settings}: one declaration per setting gives the
command line, its coercion and the typed keyword twin.
"""

from __future__ import annotations

from typing import ClassVar

from attrs import frozen
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netplugins.options import ServiceOptions, ServiceSettings, positiveInt
from netplugins.settings import flag, optionName, override, repeated, setting
from netplugins.tap.echo import EchoSettings, Options


@frozen(kw_only=True)
class ToySettings(ServiceSettings):
    """
    A service with one of each kind of setting.
    """

    defaultListen: ClassVar[tuple[str, ...]] = ("tcp:9999",)

    size: int = setting(5, "How big.", positiveInt, short="s")
    loud: bool = flag("Shout.")
    names: tuple[str, ...] = repeated("A name; repeatable.")
    idleTimeout: float | None = override(ServiceSettings, "idleTimeout", 7.0)


class ToyOptions(ServiceOptions):
    settingsType = ToySettings
    tapname = "np-toy"


class NameTests(SynchronousTestCase):
    """
    Option names come from field names.
    """

    def test_optionName(self) -> None:
        """Words and acronyms become dashed lower-case words."""
        self.assertEqual(
            [
                optionName(n)
                for n in ["maxMessageSize", "listenTLS", "tlsClientCA", "workers"]
            ],
            ["max-message-size", "listen-tls", "tls-client-ca", "workers"],
        )


class CommandLineTests(SynchronousTestCase):
    """
    The options a settings class gives a plugin.
    """

    def parse(self, *argv: str) -> ToyOptions:
        options = ToyOptions()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """With no argument, every field has its default, shared ones included."""
        self.assertEqual(self.parse().settings, ToySettings())

    def test_everyKind(self) -> None:
        """Parameters (long and short), flags and repeated options all land."""
        settings = self.parse(
            "-s", "3", "--loud", "--names", "a", "--names", "b", "--listen", "tcp:1"
        ).settings
        self.assertEqual(
            (settings.size, settings.loud, settings.names, settings.listen),
            (3, True, ("a", "b"), ("tcp:1",)),
        )

    def test_overriddenDefault(self) -> None:
        """An overridden shared default applies unless the option is given."""
        self.assertEqual(
            (
                self.parse().common.limits.idleTimeout,
                self.parse("--idle-timeout", "2").common.limits.idleTimeout,
                self.parse("--idle-timeout", "0").common.limits.idleTimeout,
            ),
            (7.0, 2.0, None),
        )
        self.assertIn("Idle connections close after 7 s.", ToyOptions().getUsage())

    def test_badValueOneLine(self) -> None:
        """A bad value is a one-line usage error naming the problem."""
        error = self.assertRaises(usage.UsageError, self.parse, "--size", "0")
        self.assertEqual(
            str(error),
            "Parameter type enforcement failed: expected a positive number, not 0",
        )

    def test_echoOptions(self) -> None:
        """np-echo's command line gives its settings class."""
        options = Options()
        options.parseOptions(["--framing", "line", "--listen", "tcp:0"])
        self.assertEqual(
            options.settings, EchoSettings(framing="line", listen=("tcp:0",))
        )


class KeywordTwinTests(SynchronousTestCase):
    """
    The settings class validates Python values as the command line does.
    """

    def test_badValueRefused(self) -> None:
        """A value the option would refuse is refused, naming the option."""
        error = self.assertRaises(ValueError, ToySettings, size=0)
        self.assertEqual(str(error), "--size: expected a positive number, not 0")

    def test_repeatedIsTuple(self) -> None:
        """Repeated fields take any iterable and hold a tuple."""
        self.assertEqual(ToySettings(names=["x"]).names, ("x",))  # type: ignore[arg-type]

    def test_endpointsCheckedOnce(self) -> None:
        """A bad endpoint is refused when the settings are loaded, naming it."""
        error = self.assertRaises(ValueError, ToySettings(listen=("nonsense:",)).common)
        self.assertEqual(
            str(error),
            "--listen: bad endpoint 'nonsense:': Unknown endpoint type: 'nonsense'",
        )
        error = self.assertRaises(ValueError, ToySettings, listenTLS=("udp:53",))
        self.assertEqual(
            str(error), "--listen-tls: UDP cannot be wrapped in TLS: 'udp:53'"
        )

    def test_commonLoadsTLS(self) -> None:
        """common() reads the TLS files, and a missing one is a ValueError."""
        settings = ToySettings(tlsCert=("/nonexistent.pem",), tlsKey=("/x.key",))
        self.assertRaises(ValueError, settings.common)
