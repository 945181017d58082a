# -*- test-case-name: tests.test_tls -*-
"""
The shared TLS layer: one server context factory (L{ServerTLS}) used for
implicit TLS listeners, STARTTLS and the C{nptls:} endpoint, plus client-side
helpers that always verify the peer.

Profile (docs/security.md): TLS 1.2 and 1.3 (1.3 only with
C{minVersion="1.3"}); TLS 1.2 suites are ECDHE with AEAD only, as Mozilla's
"intermediate" configuration; no compression, renegotiation or session tickets;
the client's cipher preference wins, as Mozilla intermediate recommends.

Certificates are chosen by SNI from the names in their subject alternative names;
unknown or missing names get the first (default) certificate.  A pyOpenSSL
C{Context} cannot change once used, so L{ServerTLS.reload} builds a whole new set
of contexts and swaps one reference: live connections keep the contexts they
started with, the next handshake uses the new ones.

The package's modules: L{identity} (settings and loading), L{server}
(L{ServerTLS}), L{handshake} (the handshake deadline), L{devcert}, L{peer}
(L{peerIdentity}), L{client} and L{endpoint} (C{nptls:}).
"""
