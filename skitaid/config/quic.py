"""What an HTTP/3 (`quic = PORT`) server needs besides the port: the checks
the config files and `skitaid.run()` share."""
from typing import List, Mapping, Tuple


def quic_problems(kw: Mapping) -> List[Tuple[str, str]]:
    """[(field, what is expected)] for the quic keys of a server's settings
    (`kw`: ServerConfig field names → values as given)."""
    problems = []
    for key in ("quic", "alt_svc_port"):
        port = kw.get(key) or 0
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            return [(key, "a UDP port number 1-65535")]
    quic = kw.get("quic") or 0
    if quic:
        if not kw.get("ssl") or not kw.get("certfile"):
            # QUIC has TLS 1.3 built in: there is no cleartext HTTP/3
            problems.append(("quic", "ssl = yes and a certfile (HTTP/3 always runs over TLS)"))
        if str(kw.get("address", "")).startswith("unix:"):
            problems.append(("quic", "an IP address in `address` (QUIC needs a UDP port, "
                                     "not a UNIX socket)"))
    else:
        for key in ("alt_svc_port", "quic_retry"):
            if kw.get(key):
                problems.append((key, "quic = PORT too (%s only applies to HTTP/3)" % key))
    return problems
