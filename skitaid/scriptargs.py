"""The command line of an app script: `python app.py [OPTION]... [COMMAND]`.

skitaid takes the command words (start/-d, stop/-s, restart/-r, reload,
status, install/update/remove, run) and its own options (--devel, --silent,
--port=N, --help, ...) out of sys.argv; the options an app declared with
skitaid.add_option() stay there and are readable as skitaid.options. Anything
else is a usage error (exit 2): a mistyped option or command word never runs
a server that ignores it.

Pure parsing: no daemon, no config. api.run() acts on the result.
"""
import os
import sys

# command word → (short option, help)
COMMANDS = (
    ("run", None, "serve in the foreground (the default)"),
    ("start", "-d", "start as a daemon"),
    ("stop", "-s", "stop the daemon"),
    ("restart", "-r", "stop and start the daemon"),
    ("reload", None, "reload the workers without dropping requests"),
    ("status", None, "show whether the daemon runs, and its workers"),
    ("install", None, "write a systemd unit that runs this script"),
    ("update", None, "rewrite that systemd unit"),
    ("remove", None, "delete that systemd unit"),
)
COMMAND_WORDS = tuple(c[0] for c in COMMANDS)
_SHORT_COMMANDS = {short: word for word, short, _ in COMMANDS if short}


class UsageError(Exception):
    """A command line skitaid cannot act on; the message says what is wrong."""


class Option:
    """One declared option: `-D`, `--dist` (a flag) or `--db=DB_NAME` (a value)."""

    def __init__(self, short, long, help, metavar=None, owner="app", commands=None):
        self.short = short          # "-D" or None
        self.long = long            # "--db" or None (without "=META")
        self.help = help
        self.metavar = metavar      # None: a flag
        self.owner = owner          # "skitaid" or "app"
        self.commands = commands    # skitaid's: the commands it goes with (None: any)

    @property
    def names(self):
        return tuple(n for n in (self.short, self.long) if n)

    def label(self):
        parts = []
        if self.short:
            parts.append(self.short)
        if self.long:
            parts.append(self.long + ("=" + self.metavar if self.metavar else ""))
        elif self.metavar:
            parts[-1] += " " + self.metavar
        return ", ".join(parts)


SKITAID_OPTIONS = (
    Option("-h", "--help", "show this help and exit", owner="skitaid"),
    Option(None, "--devel", "development mode: debug pages and the source reloader",
           owner="skitaid"),
    Option(None, "--silent", "debug pages and reloading off, whatever the script asks",
           owner="skitaid"),
    Option(None, "--port", "listen on this port instead of run(port=)", "PORT_NUMBER",
           owner="skitaid"),
    Option(None, "--json", "status: machine-readable output", owner="skitaid",
           commands=("status",)),
    Option(None, "--user", "install/update: the unit's User= (default: the sudo user, "
           "else you)", "NAME", owner="skitaid", commands=("install", "update")),
    Option(None, "--unit-path", "install/update/remove: the unit file (default: "
           "/etc/systemd/system/NAME.service)", "PATH", owner="skitaid",
           commands=("install", "update", "remove")),
    Option(None, "--force", "install/update/remove: replace or delete a unit file skitaid "
           "did not write", owner="skitaid", commands=("install", "update", "remove")),
)
# taken from the app's command line, never passed on to it
_CONSUMED = {n for o in SKITAID_OPTIONS for n in o.names}
# skitaid's options that a systemd unit for the script runs it with too
_CARRIED = ("--devel", "--silent", "--port")


def _check_name(func, name, short):
    if short:
        ok = len(name) == 2 and name[0] == "-" and name[1].isalnum()
    else:
        body = name[2:]
        ok = name.startswith("--") and not name.startswith("---") and len(body) > 0 and \
            body[0].isalnum() and all(c.isalnum() or c in "-_" for c in body)
    if not ok:
        raise ValueError("%s: %s option must look like %s, got %r"
                         % (func, "a short" if short else "a long",
                            "'-D'" if short else "'--dist' or '--db=DB_NAME'", name))


def declare(declared, short, long, help="", func="skitaid.add_option()"):
    """Check one app option for add_option() and return it as an Option."""
    for value, what in ((short, "short"), (long, "long"), (help, "help")):
        if value is not None and not isinstance(value, str):
            raise TypeError("%s: %s must be a str or None, got %r" % (func, what, value))
    metavar = None
    if long and "=" in long:
        long, _, metavar = long.partition("=")
        if not metavar:
            raise ValueError("%s: give the value a name, as in '--db=DB_NAME', got %r"
                             % (func, long + "="))
    if short is not None and short.endswith("=") or short and " " in short:
        raise ValueError("%s: a value is named on the long option ('--db=DB_NAME'), got %r"
                         % (func, short))
    if not short and not long:
        raise ValueError("%s: give a short option ('-D'), a long one ('--dist') or both" % func)
    if short:
        _check_name(func, short, True)
    if long:
        _check_name(func, long, False)
    option = Option(short, long, help or "", metavar)
    for name in option.names:
        if name in _CONSUMED or name in _SHORT_COMMANDS:
            raise ValueError("%s: %s is skitaid's own option; pick another name" % (func, name))
        for other in declared:
            if name in other.names:
                raise ValueError("%s: %s is declared already (%s)" % (func, name, other.label()))
    return option


class Parsed:
    """What a command line said: the command, every option given (by each of
    its names), and the argv the app keeps."""

    def __init__(self, command, values, app_argv, carried):
        self.command = command
        self.values = values        # "--db" → "prod", "-D" → True, ...
        self.app_argv = app_argv
        self.carried = carried      # what a service running this script is started with


def _find(options, name):
    for o in options:
        if name in o.names:
            return o
    return None


def parse(argv, declared, strict=True):
    """Parse argv[1:] (argv[0] is the script). With strict=False, unknown
    options and words are left alone (reading options before all are
    declared); with strict=True they are UsageErrors."""
    options = list(SKITAID_OPTIONS) + list(declared)
    command = None
    values = {}
    app_argv = [argv[0] if argv else ""]
    carried = []
    args = list(argv[1:])
    i = 0

    def set_command(word, how):
        nonlocal command
        if command is not None and strict:
            raise UsageError("one command at a time: %s and %s" % (command, how))
        command = word

    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            app_argv.extend(args[i:])           # the rest is the app's, as written
            carried.extend(args[i - 1:])
            break
        if not arg.startswith("-") or arg == "-":
            if arg in COMMAND_WORDS:
                set_command(arg, arg)
                continue
            if strict:
                raise UsageError("unknown command %r (commands: %s; arguments for the app "
                                 "go after --)" % (arg, ", ".join(COMMAND_WORDS)))
            app_argv.append(arg)
            continue
        if arg in _SHORT_COMMANDS:
            set_command(_SHORT_COMMANDS[arg], arg)
            continue
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
        else:                               # -D, -Dvalue
            name, value = arg[:2], arg[2:]
            eq = bool(value)
        option = _find(options, name)
        if option is None:
            if strict:
                raise UsageError("unknown option %s" % name)
            app_argv.append(arg)
            continue
        if option.metavar is None:
            if eq:
                if not strict:
                    continue
                raise UsageError("%s takes no value (got %r)" % (name, arg))
            value = True
        elif not eq:
            if i >= len(args) or (args[i].startswith("-") and args[i] != "-"):
                if not strict:
                    continue
                raise UsageError("%s needs a value: %s=%s" % (name, name, option.metavar))
            value = args[i]
            arg = [arg, args[i]]
            i += 1
        if strict and option.names[0] in values:
            raise UsageError("%s given twice" % option.label().split("=")[0])
        for n in option.names:
            values[n] = value
        written = arg if isinstance(arg, list) else [arg]
        if option.owner == "app":
            app_argv.extend(written)
        if option.owner == "app" or option.long in _CARRIED:
            carried.extend(written)
    if strict:
        _check(command or "run", values)
    return Parsed(command or "run", values, app_argv, carried)


def _check(command, values):
    """Values skitaid itself reads, and options given with the wrong command."""
    if "--port" in values:
        port = values["--port"]
        if not (port.isdigit() and 1 <= int(port) <= 65535):
            raise UsageError("--port: a port number 1-65535, got %r" % port)
    if "--devel" in values and "--silent" in values:
        raise UsageError("--devel and --silent contradict each other: give one")
    for o in SKITAID_OPTIONS:
        if o.commands and o.long in values and command not in o.commands:
            raise UsageError("%s goes with %s, not %s" % (o.long, "/".join(o.commands), command))
    user = values.get("--user")
    if isinstance(user, str) and not user.strip():
        raise UsageError("--user: a user name")


def usage_line(prog):
    return "usage: %s [OPTION]... [COMMAND]" % prog


def help_text(prog, declared):
    lines = [usage_line(prog), "",
             "COMMAND is one of %s (default: run)" % "|".join(COMMAND_WORDS), ""]
    width = max(len(word) + (len(short) + 2 if short else 0) for word, short, _ in COMMANDS)
    for word, short, text in COMMANDS:
        name = "%s, %s" % (word, short) if short else word
        lines.append("  %-*s  %s" % (width, name, text))
    lines += ["", "skitaid's options:"]

    def table(options):
        labels = [("  " + o.label()) if o.short else ("      " + o.label()) for o in options]
        w = max(len(label) for label in labels)
        return ["%-*s  %s" % (w, label, o.help) for label, o in zip(labels, options)]
    lines += table(SKITAID_OPTIONS)
    if declared:
        lines += ["", "this app's options:"] + table(declared)
    lines += ["", "Arguments for the app itself go after --."]
    return "\n".join(lines) + "\n"


def prog_name(argv):
    return os.path.basename(argv[0]) if argv and argv[0] else "app.py"


def fail(prog, message):
    """A usage error: the usage line and what is wrong to stderr, exit 2."""
    sys.stderr.write("%s\n%s: error: %s (--help lists the options)\n"
                     % (usage_line(prog), prog, message))
    sys.stderr.flush()
    raise SystemExit(2)


class Options:
    """skitaid.options: the options given on the command line, by any of their
    names: options.get('--db', 'testdb'), '-D' in options, options['--db']."""

    def __init__(self, source):
        self._source = source       # () → (values dict, known names)

    def _values(self, name):
        values, known = self._source()
        if not isinstance(name, str):
            raise TypeError("skitaid.options: an option name such as '--db', got %r" % (name,))
        key = name.partition("=")[0]
        if key not in known:
            raise KeyError("skitaid.options: %s was not declared (skitaid.add_option(None, "
                           "%r, 'what it does'))" % (key, key))
        return values, key

    def get(self, name, default=None):
        values, key = self._values(name)
        return values.get(key, default)

    def __getitem__(self, name):
        values, key = self._values(name)
        return values[key]

    def __contains__(self, name):
        values, key = self._values(name)
        return key in values

    def items(self):
        values, _ = self._source()
        return list(values.items())

    def __repr__(self):
        return "skitaid.options(%r)" % dict(self.items())
