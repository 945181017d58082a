"""
Mail over one Maildir store: the store (L{netplugins.mail.maildir.store}), who the local
users are (L{netplugins.mail.users}), and the SMTP and POP3 servers.
"""
