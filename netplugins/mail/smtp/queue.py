"""
np-smtp's relay queue: authenticated users' mail for foreign domains, kept
on disk (L{netplugins.mail.smtp.queuedir}, under C{<state-dir>/queue/}) from
before the 250 reply until the smarthost took it or the sender was told.

  - The SMTP server stages the message (L{RelayQueue.stage}), delivers the
    local copies, then commits it (L{RelayQueue.commit}) and answers 250; a
    failed local delivery discards it (L{RelayQueue.discard}), so a client's
    retry neither duplicates the local copies nor relays twice.
  - A delivery loop on the reactor sends due messages to the smarthost
    (L{netplugins.mail.smtp.relay}), at most L{PARALLEL} at once; the disk
    work runs in the queue's thread pool.
  - Each recipient has its own status: 2xx is delivered, 5xx failed, any
    other reply (4xx, a refused connection, a TLS or protocol error, a
    timeout) deferred.  Deferred recipients are tried again after a backoff
    that doubles from C{minBackoff} (Postfix's 300 s) up to C{maxBackoff}
    (3600 s); once C{lifetime} (5 days) has passed since arrival they fail.
  - Failed recipients are reported to the envelope sender in one DSN
    (L{netplugins.mail.smtp.dsn}) from C{<>}: delivered to the sender's
    Maildir when the sender is local, else queued for the smarthost.  A
    bounce (null sender) that fails is logged and dropped, never bounced.
  - The sender's DSN requests (RFC 3461, kept in the envelope) are
    honoured: C{NOTIFY=NEVER} recipients are never reported, C{FAILURE}
    ones (and those without C{NOTIFY=}) when they fail, C{DELAY} ones once,
    after their first deferral, and C{SUCCESS} ones get a C{relayed} report
    when the smarthost takes them (it is not asked for DSNs: Twisted's
    client sends no DSN parameters).  A failure report returns the message
    with C{RET=FULL}, else its headers; C{ENVID} and C{ORCPT} are echoed.
  - The queue holds at most C{maxSize} bytes and L{MAX_MESSAGES} messages:
    beyond, new mail is refused 452 4.3.1 before the 250.
  - The queue survives a restart: at start the directory is read, due
    messages are sent and the others tried within C{minBackoff}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from attrs import define
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.mail.maildir.errors import DiskFullError
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.smtp.dsn import DELAY, EXPIRED, FAILURE, SUCCESS, deliveryReport
from netplugins.mail.smtp.queuedir import (
    FAILED,
    PENDING,
    SENT,
    Claim,
    Envelope,
    LockedError,
    QueueDirectory,
    Recipient,
)
from netplugins.mail.smtp.relay import Relay, replies
from netplugins.mail.users import LocalUsers, splitAddress

_T = TypeVar("_T")

POOL_NAME = "netplugins-queue"
POOL_THREADS = 2
#: Messages sent to the smarthost at once (each is held in memory meanwhile).
PARALLEL = 4
#: Messages the queue holds at most.
MAX_MESSAGES = 10000
DEFAULT_LIFETIME = 5 * 24 * 3600.0
DEFAULT_MIN_BACKOFF = 300.0
DEFAULT_MAX_BACKOFF = 3600.0
DEFAULT_MAX_SIZE = 1024**3


class QueueFullError(DiskFullError):
    """
    The queue holds as much as it may: the message was not queued.
    """


@define
class _Entry:
    nextAttempt: float
    size: int
    busy: bool = False


class RelayQueue(Service):
    """
    The relay queue service.  See the module docstring.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        relay: Relay,
        *,
        store: MaildirStore,
        users: LocalUsers,
        hostname: str,
        smarthost: str,
        lifetime: float = DEFAULT_LIFETIME,
        minBackoff: float = DEFAULT_MIN_BACKOFF,
        maxBackoff: float = DEFAULT_MAX_BACKOFF,
        maxSize: int = DEFAULT_MAX_SIZE,
        reactor: Any = None,
        runBlocking: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        """
        @param path: the queue directory.
        @param relay: sends a message to the smarthost.
        @param store: where DSNs for local senders are delivered.
        @param users: who is local.
        @param hostname: this host, in DSNs.
        @param smarthost: named in DSNs as the C{Remote-MTA} (C{""}: the
            recipient domains' MX hosts, not named).
        @param runBlocking: how blocking calls run, C{f(*args) -> Deferred}; by
            default in the C{netplugins-queue} pool.
        """
        if reactor is None:
            from twisted.internet import reactor
        self.directory = QueueDirectory(path)
        self.relay = relay
        self.store = store
        self.users = users
        self.hostname = hostname
        self.smarthost = smarthost
        self.lifetime = lifetime
        self.minBackoff = minBackoff
        self.maxBackoff = maxBackoff
        self.maxSize = maxSize
        self._reactor = reactor
        self._runBlocking = runBlocking
        self._entries: dict[str, _Entry] = {}
        self._staged: dict[str, int] = {}
        self._bytes = 0
        self._timer: Any = None
        self._attempts: dict[str, Deferred[None]] = {}
        self._sending: dict[str, Deferred[Any]] = {}
        self._started: Deferred[Any] | None = None
        self._pumping = False
        self._pumpAgain = False

    def _run(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        if self._runBlocking is not None:
            return self._runBlocking(f, *args)
        from netplugins.threads import blockingPool, deferToPool

        pool = blockingPool(POOL_NAME, POOL_THREADS, reactor=self._reactor)
        return deferToPool(self._reactor, pool, f, *args)

    def _now(self) -> float:
        return float(self._reactor.seconds())

    # The service

    def startService(self) -> None:
        super().startService()
        d: Deferred[Any] = self._run(self.directory.prepare)
        d.addCallback(self._cbPrepared)
        d.addErrback(
            lambda reason: self.log.failure("np-smtp queue: cannot read", reason)
        )
        self._started = d

    def _cbPrepared(self, found: list[tuple[str, float, int]]) -> None:
        # A restart retries deferred mail within minBackoff, as an operator
        # who restarts after fixing the smarthost (or the backoff) expects.
        soon = self._now() + self.minBackoff
        for queueId, nextAttempt, size in found:
            if queueId not in self._entries:
                self._entries[queueId] = _Entry(min(nextAttempt, soon), size)
                self._bytes += size
        if found:
            self.log.info(
                "np-smtp queue: {count} messages queued", count=len(self._entries)
            )
        self._pump()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for sending in list(self._sending.values()):
            sending.cancel()
        waiting = [d for d in [self._started, *self._attempts.values()] if d]
        return gatherResults(waiting).addBoth(lambda _: None)

    def whenIdle(self) -> Deferred[None]:
        """
        Fires once the attempts now running are done (for tests).
        """
        return gatherResults(list(self._attempts.values())).addCallback(lambda _: None)

    def queued(self) -> list[str]:
        """
        The queue IDs of the messages held.
        """
        return sorted(self._entries)

    # Taking messages in

    def stage(
        self,
        queueId: str,
        sender: str,
        recipients: Sequence[str | Recipient],
        message: bytes,
        *,
        ret: str | None = None,
        envid: str | None = None,
    ) -> Deferred[None]:
        """
        Write a message durably for C{recipients} (addresses, or
        L{Recipient}s with their DSN requests), not yet to be sent.

        @param ret: the sender's C{RET=} (C{FULL} or C{HDRS}), if given.
        @param envid: the sender's C{ENVID=} (decoded), if given.

        @raise QueueFullError: (in the Deferred) when the queue is full.
        @raise DiskFullError: likewise, when the disk is.
        """
        from twisted.internet.defer import fail

        size = len(message)
        count = len(self._entries) + len(self._staged)
        if self._bytes + size > self.maxSize or count >= MAX_MESSAGES:
            self.log.error(
                "np-smtp queue: full ({count} messages, {size} bytes): "
                "{queueId} refused",
                count=count,
                size=self._bytes,
                queueId=queueId,
            )
            return fail(QueueFullError("the relay queue is full"))
        self._staged[queueId] = size
        self._bytes += size
        now = self._now()
        envelope = Envelope(
            sender,
            [r if isinstance(r, Recipient) else Recipient(r) for r in recipients],
            arrival=now,
            nextAttempt=now,
            ret=ret,
            envid=envid,
        )
        d = self._run(self.directory.stage, queueId, envelope, message)
        d.addErrback(self._ebStage, queueId)
        return d

    def _unstage(self, queueId: str) -> None:
        self._bytes -= self._staged.pop(queueId, 0)

    def _ebStage(self, reason: Failure, queueId: str) -> Failure:
        self._unstage(queueId)
        return reason

    def commit(self, queueId: str) -> Deferred[None]:
        """
        Queue a staged message for delivery (durably, when this fires).
        """
        d = self._run(self.directory.commit, queueId)
        d.addCallbacks(
            self._cbCommitted,
            self._ebStage,
            callbackArgs=(queueId,),
            errbackArgs=(queueId,),
        )
        return d

    def _cbCommitted(self, ignored: None, queueId: str) -> None:
        size = self._staged.pop(queueId, 0)
        self._entries[queueId] = _Entry(self._now(), size)
        self._pump()

    def discard(self, queueId: str) -> Deferred[None]:
        """
        Forget a staged message.
        """
        self._unstage(queueId)
        return self._run(self.directory.discard, queueId)

    def enqueue(
        self,
        queueId: str,
        sender: str,
        recipients: Sequence[str | Recipient],
        message: bytes,
        **dsn: str | None,
    ) -> Deferred[None]:
        """
        Stage and commit a message (C{dsn}: L{stage}'s C{ret} and C{envid}).
        """
        d = self.stage(queueId, sender, recipients, message, **dsn)
        return d.addCallback(lambda _: self.commit(queueId))

    # The delivery loop

    def _pump(self) -> None:
        # Attempts that end at once (a vanished file) pump again from
        # inside: loop here instead of nesting.
        if self._pumping:
            self._pumpAgain = True
            return
        self._pumping = True
        try:
            self._pumpAgain = True
            while self._pumpAgain and self.running:
                self._pumpAgain = False
                self._pumpOnce()
        finally:
            self._pumping = False

    def _pumpOnce(self) -> None:
        now = self._now()
        due = sorted(
            (entry.nextAttempt, queueId)
            for queueId, entry in self._entries.items()
            if not entry.busy
        )
        for nextAttempt, queueId in due:
            if len(self._attempts) >= PARALLEL or nextAttempt > now:
                break
            self._attempt(queueId)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiting = [e.nextAttempt for e in self._entries.values() if not e.busy] or [
            float("inf")
        ]
        if len(self._attempts) < PARALLEL and min(waiting) != float("inf"):
            self._timer = self._reactor.callLater(
                max(0.0, min(waiting) - now), self._pump
            )

    def _attempt(self, queueId: str) -> None:
        entry = self._entries.get(queueId)
        if entry is None or entry.busy:
            return
        entry.busy = True
        d: Deferred[Any] = self._run(self.directory.claim, queueId)
        d.addCallback(self._cbClaimed, queueId)
        d.addErrback(self._ebAttempt, queueId)
        d.addBoth(self._attemptDone, queueId)
        if not d.called:
            self._attempts[queueId] = d

    def _ebAttempt(self, reason: Failure, queueId: str) -> None:
        entry = self._entries.get(queueId)
        if reason.check(LockedError):
            self.log.debug("np-smtp queue: {queueId} busy elsewhere", queueId=queueId)
        else:
            self.log.failure(
                "np-smtp queue: {queueId}: attempt failed", reason, queueId=queueId
            )
        if entry is not None:
            entry.nextAttempt = self._now() + self.minBackoff

    def _attemptDone(self, ignored: object, queueId: str) -> None:
        self._attempts.pop(queueId, None)
        entry = self._entries.get(queueId)
        if entry is not None:
            entry.busy = False
        self._pump()

    def _cbClaimed(self, claim: Claim | None, queueId: str) -> Deferred[None] | None:
        if claim is None:
            self._forget(queueId)
            return None
        envelope = claim.envelope
        if not self.running:
            return self._run(self.directory.release, claim)
        pending = envelope.pending()
        if not pending:
            return self._finish(claim)
        sending = self.relay(envelope.sender, pending, claim.message)
        self._sending[queueId] = sending
        sending.addBoth(self._cbSent, claim, pending)
        return sending

    def _cbSent(
        self, result: object, claim: Claim, pending: list[str]
    ) -> Deferred[None] | None:
        queueId, envelope = claim.queueId, claim.envelope
        self._sending.pop(queueId, None)
        if isinstance(result, Failure) and result.check(CancelledError):
            return self._run(self.directory.release, claim)
        outcome = replies(result, pending)
        envelope.attempts += 1
        relayed = []
        for recipient in envelope.recipients:
            if recipient.address not in outcome:
                continue
            code, reply, remote = outcome[recipient.address]
            recipient.reply, recipient.remote = reply, remote
            if 200 <= code < 300:
                recipient.status = SENT
                if recipient.notifies(SUCCESS):
                    relayed.append(recipient)
            elif 500 <= code < 600:
                recipient.status = FAILED
            self.log.info(
                "np-smtp queue: {queueId} to <{recipient}> via {smarthost}: "
                "{status} ({reply})",
                queueId=queueId,
                recipient=recipient.address,
                smarthost=self.smarthost or "MX",
                status={SENT: "sent", FAILED: "bounced"}.get(
                    recipient.status, "deferred"
                ),
                reply=reply,
            )
        now = self._now()
        if envelope.pending() and now >= envelope.arrival + self.lifetime:
            for recipient in envelope.recipients:
                if recipient.status == PENDING:
                    recipient.status = FAILED
                    recipient.reply = EXPIRED + recipient.reply
            self.log.warn(
                "np-smtp queue: {queueId} expired after {attempts} attempts",
                queueId=queueId,
                attempts=envelope.attempts,
            )
        delayed = [
            r
            for r in envelope.recipients
            if r.status == PENDING and r.notifies(DELAY) and not r.delayed
        ]
        for recipient in delayed:
            recipient.delayed = True
        d: Deferred[Any] = succeed(None)
        if envelope.sender and (relayed or delayed):
            # Success and delay reports are not retried: the next step
            # (another attempt, or the end) does not wait for them to work.
            d = self._report(claim, relayed=relayed, delayed=delayed)
            d.addErrback(
                lambda reason: self.log.failure(
                    "np-smtp queue: {queueId}: DSN not sent",
                    reason,
                    queueId=queueId,
                )
            )
        if not envelope.pending():
            return d.addCallback(lambda _: self._finish(claim))
        return d.addCallback(lambda _: self._retryLater(claim))

    def _retryLater(self, claim: Claim) -> Deferred[None]:
        envelope = claim.envelope
        delay = min(
            self.minBackoff * 2 ** max(envelope.attempts - 1, 0), self.maxBackoff
        )
        envelope.nextAttempt = self._now() + delay
        self._entries[claim.queueId].nextAttempt = envelope.nextAttempt
        return self._run(self.directory.update, claim)

    def _finish(self, claim: Claim) -> Deferred[None]:
        """
        Every recipient is done: report the failed ones (once), then remove
        the message.
        """
        envelope = claim.envelope
        failed = [
            r for r in envelope.recipients if r.status == FAILED and r.notifies(FAILURE)
        ]
        if not failed:
            return self._remove(claim)
        if not envelope.sender:
            self.log.error(
                "np-smtp queue: {queueId}: a bounce was not delivered to "
                "{recipients}; dropped",
                queueId=claim.queueId,
                recipients=", ".join(f"<{r.address}>" for r in failed),
            )
            return self._remove(claim)
        d = self._report(claim, failed=failed)
        # Only a failed DSN is retried: a failure to remove is the attempt's.
        d.addCallbacks(
            cast(Any, lambda _: self._remove(claim)),
            cast(Any, self._ebBounce),
            errbackArgs=(claim,),
        )
        return d

    def _ebBounce(self, reason: Failure, claim: Claim) -> Deferred[None]:
        self.log.failure(
            "np-smtp queue: {queueId}: DSN not sent; retrying later",
            reason,
            queueId=claim.queueId,
        )
        return self._retryLater(claim)

    def _remove(self, claim: Claim) -> Deferred[None]:
        d = self._run(self.directory.remove, claim)
        return d.addCallback(lambda _: self._forget(claim.queueId))

    def _forget(self, queueId: str) -> None:
        entry = self._entries.pop(queueId, None)
        if entry is not None:
            self._bytes -= entry.size

    def _report(self, claim: Claim, **recipients: list[Recipient]) -> Deferred[Any]:
        """
        Send the sender a DSN about C{recipients} (L{deliveryReport}'s
        C{failed}, C{delayed}, C{relayed}): to their Maildir when local, else
        through the queue.
        """
        envelope = claim.envelope
        report = deliveryReport(
            hostname=self.hostname,
            smarthost=self.smarthost,
            sender=envelope.sender,
            queueId=claim.queueId,
            arrival=envelope.arrival,
            message=claim.message,
            ret=envelope.ret,
            envid=envelope.envid,
            retryUntil=envelope.arrival + self.lifetime,
            **recipients,
        )
        return sendReport(
            report,
            envelope.sender,
            claim.queueId,
            store=self.store,
            users=self.users,
            queue=self,
        )


def sendReport(
    report: bytes,
    sender: str,
    queueId: str,
    *,
    store: MaildirStore,
    users: LocalUsers,
    queue: RelayQueue | None,
) -> Deferred[Any]:
    """
    Send the DSN C{report} about message C{queueId} to C{sender}: into
    their Maildir when the address is local, else through C{queue} (from
    C{<>}); without a queue a report for a foreign sender is logged and
    dropped.
    """
    import secrets

    log = RelayQueue.log
    parts = splitAddress(sender)
    if parts is None or not users.isLocal(parts[1]):
        if queue is None:
            log.warn(
                "np-smtp: {queueId}: DSN for <{sender}> dropped: no relay queue",
                queueId=queueId,
                sender=sender,
            )
            return succeed(None)
        bounceId = secrets.token_hex(6).upper()
        log.info(
            "np-smtp queue: {queueId}: DSN {bounceId} queued for <{sender}>",
            queueId=queueId,
            bounceId=bounceId,
            sender=sender,
        )
        return queue.enqueue(bounceId, "", [sender], report)

    def delivered(mailboxes: list[str] | None) -> Deferred[Any]:
        if mailboxes is None:
            log.error(
                "np-smtp queue: {queueId}: DSN dropped: no local user <{sender}>",
                queueId=queueId,
                sender=sender,
            )
            return succeed(None)
        log.info(
            "np-smtp queue: {queueId}: DSN delivered to <{sender}>",
            queueId=queueId,
            sender=sender,
        )
        return store.deliverMany(mailboxes, b"Return-Path: <>\r\n" + report)

    d: Deferred[Any] = users.recipients(sender)
    return d.addCallback(delivered)
