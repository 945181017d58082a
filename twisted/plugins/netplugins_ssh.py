from twisted.application.service import ServiceMaker

NetpluginsSSH = ServiceMaker(
    "netplugins ssh",
    "netplugins.tap.ssh",
    "SSH with a jailed SFTP, a restricted shell and modern algorithms only.",
    "np-ssh",
)
