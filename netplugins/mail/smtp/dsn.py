"""
Delivery status notifications (RFC 3464) for the relay queue
(L{netplugins.mail.smtp.queue}): a C{multipart/report} with a readable
part, the C{message/delivery-status} part (one block per failed recipient)
and the returned message's headers (C{text/rfc822-headers}, RFC 6522), from
C{MAILER-DAEMON} and sent with the null reverse-path C{<>}.
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


def deliveryReport(
    *,
    hostname: str,
    smarthost: str,
    sender: str,
    queueId: str,
    arrival: float,
    failed: Sequence[Recipient],
    message: bytes,
) -> bytes:
    """
    The DSN telling C{sender} that C{failed} were not reached, with CRLF
    line ends.
    """
    boundary = f"{queueId}.{secrets.token_hex(8)}/{hostname}"
    host = _oneLine(hostname)
    readable = [
        f"This is the mail system at host {host}.",
        "",
        "Your message could not be delivered to these recipients",
        "(refused, or still failing when the queue's time limit passed):",
        "",
    ]
    report = [
        f"Reporting-MTA: dns; {host}",
        f"X-Queue-ID: {queueId}",
        f"Arrival-Date: {formatdate(arrival)}",
    ]
    for recipient in failed:
        reply = _oneLine(recipient.reply) or "unknown error"
        readable.append(f"<{recipient.address}>: {reply}")
        report += [
            "",
            f"Final-Recipient: rfc822; {recipient.address}",
            "Action: failed",
            f"Status: {statusOf(recipient.reply)}",
        ]
        if recipient.remote:
            report += [
                f"Remote-MTA: dns; {_oneLine(smarthost)}",
                f"Diagnostic-Code: smtp; {reply}",
            ]
        else:
            report.append(f"X-Diagnostic: {reply}")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
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
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered Message Headers",
        "",
    ]
    text = "\r\n".join(head) + "\r\n"
    return (
        text.encode("ascii", "replace")
        + returnedHeaders(message)
        + f"\r\n--{boundary}--\r\n".encode("ascii", "replace")
    )
