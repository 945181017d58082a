from twisted.application.service import ServiceMaker

NetpluginsFTP = ServiceMaker(
    "netplugins FTP",
    "netplugins.tap.ftp",
    "FTP with explicit and implicit FTPS, jailed homes, no bounce.",
    "np-ftp",
)
