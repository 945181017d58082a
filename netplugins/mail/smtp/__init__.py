"""
np-smtp, an ESMTP server delivering to the Maildir store:
L{netplugins.mail.smtp.server} (the session state machine and its factory),
L{netplugins.mail.smtp.data} (reading one DATA body safely) and
L{netplugins.mail.smtp.relay} (the smarthost relay for authenticated users).
"""
