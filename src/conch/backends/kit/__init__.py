"""What several backends share: the hold registry and heartbeat (``session``), TLS options
and handshake diagnosis (``tls``, ``tls_diagnosis``), and waits on a socket (``socket_wait``)."""
