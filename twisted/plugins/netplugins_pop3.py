from twisted.application.service import ServiceMaker

NetpluginsPOP3 = ServiceMaker(
    "netplugins POP3",
    "netplugins.tap.pop3",
    "POP3 on Maildirs: STLS, AUTH PLAIN, deletions at QUIT.",
    "np-pop3",
)
