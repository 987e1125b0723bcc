"""The server: client actions (with and without a socket), security and hostile
clients, the handshake, HTTP endpoints, keepalive, fan-out, resume, startup
checks and the library internals it relies on."""
