"""
A small mail host in one process: copy this file, edit the settings (or set the
MAILHOST_* environment variables), run it with::

    twistd -ny mailhost.tac          # foreground; drop -n to daemonise

What listens (MAILHOST_PORT_BASE, if set, is added to every port, so that
MAILHOST_PORT_BASE=10000 runs the same host unprivileged on 10025, 10587, ...):

    port  protocol                                         auth
    25    SMTP, STARTTLS offered (mail from the world)     optional; no relay
    587   submission, STARTTLS                             required
    465   submission over implicit TLS (RFC 8314)          required
    143   IMAP, STARTTLS (LOGINDISABLED until then)        required
    993   IMAPS                                            required
    110   POP3, STLS                                       required
    995   POP3S                                            required

Users log in against LDAP (the ldap: checker; MAILHOST_AUTH may name any
--auth checkers, space-separated) and receive mail for their LDAP mail
addresses in the MAILHOST_DOMAINS domains (any of their mail values, even
one unlike the uid); passwords are accepted only over TLS, and an
authenticated user sends only as one of their own addresses (else 553).
One certificate serves every port (MAILHOST_TLS_CERT and MAILHOST_TLS_KEY;
without them a development certificate is generated in the state directory
and its fingerprint logged).  Maildirs live under
<state dir>/mail, one per user (Maildir++ folders for IMAP).  Mail for other
domains is refused unless MAILHOST_SMARTHOST is set, and then relayed only for
authenticated users.

An example /etc/netplugins/ldap.ini (bind secrets stay off command lines)::

    [ldap]
    url = ldap://ldap.example.org/ou=people,dc=example,dc=org?uid?sub
    bind_dn = cn=mail,dc=example,dc=org
    bind_password_file = /etc/netplugins/ldap.secret
    starttls = yes
    ca_file = /etc/ssl/certs/ca-certificates.crt

The search account (bind_dn) is what lets SMTP check at RCPT time that a local
recipient exists.
"""

import os

from twisted.application.service import Application

from netplugins.tap.mail import MailHostSettings, mailService

env = os.environ.get

STATE_DIR = env("MAILHOST_STATE_DIR", "/var/lib/netplugins")
DOMAINS = tuple(env("MAILHOST_DOMAINS", "example.org").split())
HOSTNAME = env("MAILHOST_HOSTNAME") or None
AUTH = tuple(env("MAILHOST_AUTH", "ldap:config=/etc/netplugins/ldap.ini").split())
TLS_CERT = env("MAILHOST_TLS_CERT")
TLS_KEY = env("MAILHOST_TLS_KEY")
INTERFACE = env("MAILHOST_INTERFACE", "0.0.0.0")
PORT_BASE = int(env("MAILHOST_PORT_BASE", "0"))
SMARTHOST = env("MAILHOST_SMARTHOST") or None


def endpoint(port: int) -> tuple[str, ...]:
    """
    The listening endpoint for a well-known port (shifted by PORT_BASE).
    """
    interface = INTERFACE.replace(":", "\\:")
    return (f"tcp:{PORT_BASE + port}:interface={interface}",)


application = Application("mailhost")
mailService(
    MailHostSettings(
        domains=DOMAINS,
        hostname=HOSTNAME,
        smtp=endpoint(25),
        submission=endpoint(587),
        smtps=endpoint(465),
        imap=endpoint(143),
        imaps=endpoint(993),
        pop3=endpoint(110),
        pop3s=endpoint(995),
        smarthost=SMARTHOST,
        auth=AUTH,
        tlsCert=(TLS_CERT,) if TLS_CERT else (),
        tlsKey=(TLS_KEY,) if TLS_KEY else (),
        stateDir=STATE_DIR,
    )
).setServiceParent(application)
