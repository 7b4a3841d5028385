"""skitaid.preference(): a mount's own settings, as the 0.36 page has them.

    with skitaid.preference() as pref:
        pref.debug = True               # this mount's debug pages
        pref.use_reloader = True        # watched by the development reloader
        pref.config["DB"] = "test"      # merged into app.config (Flask style)
        skitaid.mount("/", app, pref=pref)

Only these three are known: setting any other attribute is an error rather
than a setting nobody reads.
"""


class AppConfig(dict):
    """pref.config: a dict, also readable and writable as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class Preference:
    __slots__ = ("debug", "use_reloader", "config")

    def __init__(self):
        self.debug = None           # None: the server's setting
        self.use_reloader = False
        self.config = AppConfig()

    def __setattr__(self, name, value):
        if name not in Preference.__slots__:
            raise AttributeError("skitaid.preference(): pref has debug, use_reloader and "
                                 "config, not %r" % name)
        if name in ("debug", "use_reloader") and value is not None and \
                not isinstance(value, bool):
            raise ValueError("skitaid.preference(): pref.%s is True or False, got %r"
                             % (name, value))
        if name == "config":
            if not isinstance(value, dict):
                raise ValueError("skitaid.preference(): pref.config is a dict, got %r" % (value,))
            value = AppConfig(value)
        object.__setattr__(self, name, value)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def apply_app_config(app, settings):
    """Merge a mount's pref.config into its app's config, as Flask's
    app.config.update() would; an app without a config gets a dict."""
    if not settings:
        return app
    current = getattr(app, "config", None)
    if current is None:
        try:
            app.config = dict(settings)
        except (AttributeError, TypeError):
            raise TypeError("pref.config given for %r, which has no config and takes no "
                            "attributes" % (app,)) from None
    elif hasattr(current, "update"):
        current.update(settings)
    else:
        raise TypeError("pref.config given for %r, whose config (%r) has no update()"
                        % (app, type(current).__name__))
    return app
