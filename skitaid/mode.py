"""This process's development mode, as its command line set it.

`--devel` (a script's switch, `skitaid run --devel`) turns on debug pages and
the source reloader; `--silent` forces both off, whatever the config or the
app asks. The flags live here, below everything, so that the command-line
parser that sets them and the layers that obey them need not know each other.
"""

devel = False
silent = False


def set_mode(devel=None, silent=None):
    """Set either flag; None leaves it as it is."""
    g = globals()
    if devel is not None:
        g["devel"] = bool(devel)
    if silent is not None:
        g["silent"] = bool(silent)


def is_devel():
    """True when development mode is on and not silenced."""
    return devel and not silent
