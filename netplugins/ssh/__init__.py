"""
np-ssh: an SSH server on Twisted conch for accounts that are not OS
accounts.  L{transport} (modern algorithms, strict key exchange) over
L{packets}; L{hostkeys}; L{auth} (throttled logins, authorized keys);
L{session} (session channels only) running L{shell} or L{sftp};
L{factory} ties them together; C{netplugins.tap.ssh} is the command line.
"""
