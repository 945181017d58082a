"""
np-imap, an IMAP4rev1 server on the Maildir store, by responsibility:
L{netplugins.mail.imap.server} (the connection, reading commands, login, the
factory), L{netplugins.mail.imap.session} (what the command modules share),
L{netplugins.mail.imap.mailboxes} (commands on mailboxes),
L{netplugins.mail.imap.selected} (commands on the selected mailbox), and under
them L{netplugins.mail.imap.parse} (bounded reading and tokenising),
L{netplugins.mail.imap.fetch} (MIME structure and FETCH),
L{netplugins.mail.imap.search} (SEARCH); the extensions' own modules:
L{netplugins.mail.imap.sortthread} (SORT and THREAD, on
L{netplugins.mail.imap.sort} and L{netplugins.mail.imap.thread}),
L{netplugins.mail.imap.quota} (QUOTA), L{netplugins.mail.imap.compress}
(COMPRESS=DEFLATE), L{netplugins.mail.imap.binary} (BINARY) and
L{netplugins.mail.imap.notify} (IDLE through inotify).
"""
