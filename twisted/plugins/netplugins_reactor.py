from twisted.application.reactors import Reactor

npEpoll = Reactor(
    "np-epoll",
    "netplugins.reactor",
    "netplugins' epoll reactor: Twisted's, with cheaper event dispatch.",
)
