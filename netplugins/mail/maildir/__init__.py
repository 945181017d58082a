"""
The Maildir store shared by SMTP, POP3 and IMAP: the store itself
(L{netplugins.mail.maildir.store}, whose docstring gives the layout and the
guarantees), one folder (L{netplugins.mail.maildir.folder}), the names it
accepts and makes (L{netplugins.mail.maildir.names}), its errors
(L{netplugins.mail.maildir.errors}) and the blocking disk work under it
(L{netplugins.mail.maildir.files}).
"""
