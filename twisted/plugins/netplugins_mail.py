from twisted.application.service import ServiceMaker

NetpluginsMail = ServiceMaker(
    "netplugins mail host",
    "netplugins.tap.mail",
    "SMTP, submission, POP3 and IMAP on one Maildir store, with TLS.",
    "np-mail",
)
