"""Foreground serving for `skitaid run` and `skitaid.run()`: the master, in this process."""
from ..daemon.listeners import bind_listener as bind_socket  # noqa: F401  (older name)


def serve(config, loader=None):
    """Serve every server of `config` under a master in the foreground; an exit code."""
    from ..daemon.commands import run
    return run(config, loader)
