from twisted.application.service import ServiceMaker

NetpluginsZen = ServiceMaker(
    "netplugins zen",
    "netplugins.tap.zen",
    "The Zen of Python question-and-answer protocol (Foundations, chapter 7).",
    "np-zen",
)
