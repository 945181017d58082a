from twisted.application.service import ServiceMaker

NetpluginsIMAP = ServiceMaker(
    "netplugins imap",
    "netplugins.tap.imap",
    "IMAP4rev1 (STARTTLS, IDLE, UIDPLUS) over the users' Maildirs.",
    "np-imap",
)
