"""
THREAD for np-imap (RFC 5256): the ORDEREDSUBJECT and REFERENCES
algorithms on L{SortMessage}s, and the C{* THREAD} response's format.

Both take time about linear in the messages and their references (a
References field holds at most L{MAX_REFERENCES} IDs; a loop check walks at
most the depth of the tree, itself bounded by the references), with sorting
on top; no recursion: a thread may be as deep as the mailbox is large.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import define, field

from netplugins.mail.imap.sort import MAX_REFERENCES, SortMessage

__all__ = ["MAX_REFERENCES", "THREAD_ALGORITHMS", "formatThreads", "thread"]

THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


@define(eq=False)
class Node:
    """
    A thread's node: a message, or a dummy standing for one not in the
    mailbox (C{message} is C{None}).
    """

    message: SortMessage | None = None
    parent: Node | None = None
    children: list[Node] = field(factory=list)
    #: The mailbox order of its message, to break ties in dates.
    index: int = 0

    def isAncestorOf(self, other: Node) -> bool:
        node: Node | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def adopt(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)


def _sortKey(node: Node) -> tuple[float, int]:
    # A dummy sorts as its first child (children are sorted first).
    while node.message is None and node.children:
        node = node.children[0]
    if node.message is None:
        return (0.0, 0)
    return (node.message.fields.sent, node.index)


def _subjectOf(node: Node) -> SortMessage | None:
    if node.message is None and node.children:
        return node.children[0].message
    return node.message


def _orderedSubject(messages: Sequence[SortMessage]) -> list[Node]:
    ordered = sorted(
        enumerate(messages),
        key=lambda im: (im[1].fields.subject, im[1].fields.sent, im[0]),
    )
    roots: list[Node] = []
    current: Node | None = None
    for index, message in ordered:
        node = Node(message, index=index)
        if (
            current is not None
            and current.message is not None
            and (current.message.fields.subject == message.fields.subject)
        ):
            current.adopt(node)
        else:
            current = node
            roots.append(node)
    roots.sort(key=_sortKey)
    return roots


def _references(messages: Sequence[SortMessage]) -> list[Node]:
    byId: dict[bytes, Node] = {}
    nodes: list[Node] = []
    for index, message in enumerate(messages):
        # (1) Link the references, parent before child, keeping links made
        # earlier and never making a loop.
        parent: Node | None = None
        for ref in message.fields.references:
            container = byId.get(ref)
            if container is None:
                container = byId[ref] = Node()
            if (
                parent is not None
                and container.parent is None
                and container is not parent
                and not container.isAncestorOf(parent)
            ):
                parent.adopt(container)
            parent = container
        # (1B) The message's own container: a duplicate ID gets its own.
        messageId = message.fields.messageId
        own = byId.get(messageId) if messageId is not None else None
        if own is None or own.message is not None:
            own = Node()
            if messageId is not None and messageId not in byId:
                byId[messageId] = own
        own.message = message
        own.index = index
        nodes.append(own)
        if parent is not None and parent is not own and not own.isAncestorOf(parent):
            parent.adopt(own)
        elif own.parent is not None:
            own.parent.children.remove(own)
            own.parent = None
    # (2) The roots, in the order their containers were made.
    seen: set[int] = set()
    roots: list[Node] = []
    for node in [*byId.values(), *nodes]:
        if node.parent is None and id(node) not in seen:
            seen.add(id(node))
            roots.append(node)
    # (3) Prune dummies.
    root = Node(children=roots)
    for node in roots:
        node.parent = root
    _prune(root)
    for node in root.children:
        node.parent = None
    roots = root.children
    # (4) Sort the roots by date (a dummy by its first child).
    _sortChildren(roots)
    roots.sort(key=_sortKey)
    # (5) Gather threads with the same base subject.
    roots = _gather(roots)
    # (6) Sort every set of siblings.
    _sortChildren(roots)
    roots.sort(key=_sortKey)
    return roots


def _prune(root: Node) -> None:
    # Depth first without recursion: children before their parents.
    order: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    for node in reversed(order):
        kept: list[Node] = []
        for child in node.children:
            if child.message is not None:
                kept.append(child)
            elif not child.children:
                continue
            elif node is root and len(child.children) > 1:
                kept.append(child)
            else:
                for grandchild in child.children:
                    grandchild.parent = node
                kept.extend(child.children)
        node.children = kept


def _sortChildren(roots: list[Node]) -> None:
    # Youngest siblings first, so that a dummy sorts by its sorted children.
    order: list[Node] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    for node in reversed(order):
        node.children.sort(key=_sortKey)


def _gather(roots: list[Node]) -> list[Node]:
    """
    RFC 5256's step (5): threads whose roots have the same base subject
    become one.
    """

    def subjectOf(node: Node) -> SortMessage | None:
        message = _subjectOf(node)
        return message if message is not None and message.fields.subject else None

    table: dict[str, Node] = {}
    for node in roots:
        message = subjectOf(node)
        if message is None:
            continue
        other = table.get(message.fields.subject)
        if other is None:
            table[message.fields.subject] = node
            continue
        otherMessage = _subjectOf(other)
        if (node.message is None and other.message is not None) or (
            otherMessage is not None
            and otherMessage.fields.reply
            and not message.fields.reply
        ):
            table[message.fields.subject] = node
    out = list(roots)
    gone: set[int] = set()
    for node in roots:
        message = subjectOf(node)
        if message is None:
            continue
        subject = message.fields.subject
        other = table[subject]
        if other is node:
            continue
        if node.message is None and other.message is None:
            for child in list(node.children):
                other.adopt(child)
            gone.add(id(node))
        elif other.message is None:
            other.adopt(node)
            gone.add(id(node))
        elif node.message is None:
            node.adopt(other)
            gone.add(id(other))
            table[subject] = node
        elif not other.message.fields.reply and node.message.fields.reply:
            other.adopt(node)
            gone.add(id(node))
        else:
            dummy = Node()
            for i, root in enumerate(out):
                if root is other:
                    out[i] = dummy
            gone.add(id(node))
            dummy.adopt(other)
            dummy.adopt(node)
            table[subject] = dummy
    for node in out:
        if node.parent is not None:
            gone.add(id(node))
    return [node for node in out if id(node) not in gone]


def thread(algorithm: str, messages: Sequence[SortMessage]) -> list[Node]:
    """
    The threads of C{messages} (in mailbox order) by C{algorithm}, one of
    L{THREAD_ALGORITHMS}, as their root nodes in the order to answer.
    """
    if algorithm == "ORDEREDSUBJECT":
        return _orderedSubject(messages)
    return _references(messages)


def formatThreads(roots: Sequence[Node]) -> bytes:
    """
    The threads as the C{* THREAD} response carries them after its name:
    C{(3 6 (4 23)(44 7 96))}.
    """
    out: list[bytes] = []
    # What is left to write: text, or a node to open (its ")" is below it).
    stack: list[Node | bytes] = []
    for root in reversed(roots):
        stack += [b")", root]
    while stack:
        node = stack.pop()
        if isinstance(node, bytes):
            out.append(node)
            continue
        out.append(b"(")
        numbers: list[bytes] = []
        # A run of single children stays on one list.
        while node.message is not None:
            numbers.append(b"%d" % node.message.number)
            if len(node.children) != 1:
                break
            node = node.children[0]
        out.append(b" ".join(numbers))
        if node.children:
            if numbers:
                out.append(b" ")
            for child in reversed(node.children):
                stack += [b")", child]
    return b"".join(out)
