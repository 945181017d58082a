"""
Mail over one Maildir store, one package or module per responsibility:
  - L{netplugins.mail.maildir}: the store (users' Maildirs and their folders);
  - L{netplugins.mail.users}: who the local users are and which Maildir each
    reads, and the realm the protocols log in through;
  - L{netplugins.mail.directory}: what a credential checker provides to serve
    mail for its users (L{netplugins.mail.directory.IMailDirectory});
  - L{netplugins.mail.factory}: the constructor every protocol's factory
    shares (store, portal, and a frozen config object);
  - L{netplugins.mail.linesession}: the sessions' shared plumbing (deadlines,
    logins through the throttle);
  - the protocols: L{netplugins.mail.smtp}, L{netplugins.mail.pop3} and
    L{netplugins.mail.imap}.
"""
