"""
Delivery status notifications (RFC 3464) for the relay queue
(L{netplugins.mail.smtp.queue}) and local delivery: a C{multipart/report}
with a readable part, the C{message/delivery-status} part (one block per
recipient: failed, delayed, relayed or delivered) and the returned
message's headers (C{text/rfc822-headers}, RFC 6522) or, for a failure
with C{RET=FULL}, the message itself, from C{MAILER-DAEMON} and sent with
the null reverse-path C{<>}.

Also the SMTP DSN extension's parameters (RFC 3461): C{RET=} and
C{ENVID=} on MAIL, C{NOTIFY=} and C{ORCPT=} on RCPT, whose xtext values are
decoded only within the RFC's length limits and only to printable ASCII
(they are copied into the report's header fields).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from email.utils import formatdate

from netplugins.mail.smtp.queuedir import Recipient

#: The returned headers are cut (at a line end) past this many bytes.
MAX_RETURNED_HEADERS = 64 * 1024

#: How the queue marks the reply of a recipient it gave up on.
EXPIRED = "expired: "

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")

#: RFC 3461 section 4.4: an ENVID is at most 100 characters (as sent).
MAX_ENVID = 100
#: RFC 3461 section 4.2: an ORCPT is at most 500 characters (as sent).
MAX_ORCPT = 500
#: The NOTIFY= events.
SUCCESS, FAILURE, DELAY = "SUCCESS", "FAILURE", "DELAY"

_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def decodeXtext(text: str, limit: int) -> str | None:
    """
    The value of the xtext C{text} (RFC 3461 section 4), if C{text} is at
    most C{limit} characters and its value printable ASCII; else C{None}.
    """
    if len(text) > limit or _XTEXT.fullmatch(text) is None:
        return None
    value = _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), text)
    if not all(" " <= c <= "~" for c in value):
        return None
    return value


def parseNotify(value: str) -> tuple[str, ...] | None:
    """
    The events of a C{NOTIFY=} value: empty for C{NEVER}, else some of
    L{SUCCESS}, L{FAILURE}, L{DELAY}; C{None} if malformed.
    """
    events = value.upper().split(",")
    if events == ["NEVER"]:
        return ()
    if len(set(events)) != len(events) or not set(events) <= {
        SUCCESS,
        FAILURE,
        DELAY,
    }:
        return None
    return tuple(events)


def parseOrcpt(value: str) -> str | None:
    """
    An C{ORCPT=} value (C{addr-type;xtext}) decoded as C{addr-type;address};
    C{None} if malformed or too long.
    """
    addrType, semicolon, address = value.partition(";")
    if not semicolon or _ADDR_TYPE.fullmatch(addrType) is None:
        return None
    decoded = decodeXtext(address, MAX_ORCPT - len(addrType) - 1)
    if not decoded:
        return None
    return f"{addrType};{decoded}"


def statusOf(reply: str) -> str:
    """
    The RFC 3463 status of a failed recipient: C{4.4.7} (delivery time
    expired) for one the queue gave up on (its reply starts with
    L{EXPIRED}), else the enhanced code in its last reply, else one from the
    reply's class.
    """
    if reply.startswith(EXPIRED):
        return "4.4.7"
    found = _ENHANCED.search(reply)
    if found is not None:
        return found.group(0)
    return "4.0.0" if reply[:1] == "4" else "5.0.0"


def _oneLine(text: str) -> str:
    return " ".join(text.split()).encode("ascii", "replace").decode("ascii")


def returnedHeaders(message: bytes) -> bytes:
    """
    The header section of C{message}, cut at a line end past
    L{MAX_RETURNED_HEADERS}.
    """
    end = message.find(b"\r\n\r\n")
    headers = message if end == -1 else message[: end + 2]
    if len(headers) > MAX_RETURNED_HEADERS:
        headers = headers[: headers.rfind(b"\r\n", 0, MAX_RETURNED_HEADERS) + 2]
    return headers


def _deliveryStatus(recipient: Recipient, action: str) -> str:
    """
    The RFC 3463 status of C{recipient} in a report of C{action}.
    """
    if action == "failed":
        return statusOf(recipient.reply)
    if action == "delayed":
        found = _ENHANCED.search(recipient.reply)
        return found.group(0) if found and found.group(1) == "4" else "4.0.0"
    return "2.0.0"


#: Each action's line in the readable part, and its title.
_READABLE = {
    "failed": "Your message could not be delivered to these recipients\r\n"
    "(refused, or still failing when the queue's time limit passed):",
    "delayed": "Your message could not be delivered yet to these recipients;\r\n"
    "the mail system will keep trying:",
    "relayed": "Your message was relayed to these recipients through a mail\r\n"
    "system that sends no delivery notifications: no further notice\r\n"
    "will come from here:",
    "delivered": "Your message was delivered to these recipients' mailboxes:",
}


def deliveryReport(
    *,
    hostname: str,
    smarthost: str,
    sender: str,
    queueId: str,
    arrival: float,
    message: bytes,
    failed: Sequence[Recipient] = (),
    delayed: Sequence[Recipient] = (),
    relayed: Sequence[Recipient] = (),
    delivered: Sequence[Recipient] = (),
    ret: str | None = None,
    envid: str | None = None,
    retryUntil: float | None = None,
) -> bytes:
    """
    The DSN telling C{sender} what became of its message to these
    recipients (C{failed}, C{delayed}: still being tried until
    C{retryUntil}, C{relayed} to C{smarthost} (C{""}: the recipient
    domain's MX host, not named), C{delivered} here), with
    CRLF line ends.  A failure report with C{ret} C{FULL} returns the whole
    message; any other, its headers.  C{envid} and each recipient's ORCPT
    are echoed.
    """
    boundary = f"{queueId}.{secrets.token_hex(8)}/{hostname}"
    host = _oneLine(hostname)
    readable = [f"This is the mail system at host {host}."]
    report = [f"Original-Envelope-Id: {_oneLine(envid)}"] if envid else []
    report += [
        f"Reporting-MTA: dns; {host}",
        f"X-Queue-ID: {queueId}",
        f"Arrival-Date: {formatdate(arrival)}",
    ]
    groups = (
        ("failed", failed),
        ("delayed", delayed),
        ("relayed", relayed),
        ("delivered", delivered),
    )
    for action, recipients in groups:
        if not recipients:
            continue
        readable += ["", _READABLE[action], ""]
        for recipient in recipients:
            reply = _oneLine(recipient.reply)
            if action in ("failed", "delayed"):
                reply = reply or "unknown error"
            readable.append(
                f"<{recipient.address}>: {reply}" if reply else f"<{recipient.address}>"
            )
            report.append("")
            if recipient.orcpt:
                report.append(f"Original-Recipient: {_oneLine(recipient.orcpt)}")
            report += [
                f"Final-Recipient: rfc822; {recipient.address}",
                f"Action: {action}",
                f"Status: {_deliveryStatus(recipient, action)}",
            ]
            if recipient.remote and reply:
                if smarthost:
                    report.append(f"Remote-MTA: dns; {_oneLine(smarthost)}")
                report.append(f"Diagnostic-Code: smtp; {reply}")
            elif reply:
                report.append(f"X-Diagnostic: {reply}")
            if action == "delayed" and retryUntil is not None:
                report.append(f"Will-Retry-Until: {formatdate(retryUntil)}")
    if failed:
        subject = "Undelivered Mail Returned to Sender"
    elif delayed:
        subject = "Delayed Mail (still being retried)"
    else:
        subject = "Successful Mail Delivery Report"
    full = bool(failed) and ret == "FULL"
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {formatdate(localtime=True)}",
        f"Message-ID: <{queueId}.{secrets.token_hex(4)}@{host}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Description: Notification",
        "",
        *readable,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        *report,
        "",
        f"--{boundary}",
        *(
            ["Content-Type: message/rfc822", "Content-Description: Undelivered Message"]
            if full
            else [
                "Content-Type: text/rfc822-headers",
                "Content-Description: Message Headers",
            ]
        ),
        "",
    ]
    text = "\r\n".join(head) + "\r\n"
    returned = message if full else returnedHeaders(message)
    if full and not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    return (
        text.encode("ascii", "replace")
        + returned
        + f"\r\n--{boundary}--\r\n".encode("ascii", "replace")
    )
