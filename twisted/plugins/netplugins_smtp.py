from twisted.application.service import ServiceMaker

NetpluginsSMTP = ServiceMaker(
    "netplugins SMTP",
    "netplugins.tap.smtp",
    "ESMTP to Maildirs: STARTTLS, AUTH, submission, no open relay.",
    "np-smtp",
)
