"""YAML server files → the same sections as INI → model.

```yaml
server: {ip: 0.0.0.0, port: 5000}
routes:                      # the default host group
  /: [sites/static, sites/app.py:app]
hosts:                       # other host groups, same shape
  .example.com: {/: sites/sub/app.py:app, certfile: sub.pem}   # certfile/keyfile: SNI
"@backend": {members: [10.0.0.1:5000 2, 10.0.0.2:5000]}
```

Values are turned back into the text an INI file would hold, so the rules
and messages in build.py apply unchanged.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from .build import (ALIAS_SECTION, CACHEFS, GATEWAY, ROUTES, SERVER, FileContext, RawSection,
                    build_server)
from .errors import Problem
from .model import ServerConfig
from .where import add_lines


class _NotScalar(Exception):
    pass


def _text(value) -> str:
    """A YAML value as INI text: booleans → yes/no, lists → comma separated."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(x) for x in value)
    if isinstance(value, dict):
        raise _NotScalar()
    return str(value)


def _mapping_section(name, kind, mapping, file, problems) -> RawSection:
    sec = RawSection(name=name, kind=kind)
    for key, value in mapping.items():
        try:
            sec.entries.append((str(key), _text(value)))
        except _NotScalar:
            problems.append(Problem(file, name, str(key), repr(value), "a single value or a list"))
    return sec


def _routes_section(name, host_names, mapping, file, problems) -> RawSection:
    sec = RawSection(name=name, kind=ROUTES, entries=[(host_names, None)])
    for prefix, targets in mapping.items():
        if not isinstance(targets, list):
            targets = [targets]
        for target in targets:
            if target is None or isinstance(target, (dict, list, bool)):
                problems.append(Problem(file, name, str(prefix), repr(target),
                                        "a target or a list of targets"))
                continue
            sec.entries.append((str(prefix), str(target)))
    return sec


def read_sections(text: str, file: str) -> Tuple[Optional[List[RawSection]], List[Problem]]:
    """YAML text → sections; None instead of sections when the file can't be read at all."""
    try:
        import yaml
    except ImportError:
        return None, [Problem(file, "", "", None, "PyYAML installed to read YAML files "
                            "(pip install pyyaml), or an INI .conf file")]
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        return None, [Problem(file, "", "", None, "valid YAML (%s)" % " ".join(str(e).split()),
                              line=mark.line + 1 if mark is not None else 0)]
    problems: List[Problem] = []
    sections: List[RawSection] = []
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        return None, [Problem(file, "", "", repr(doc)[:60], "a mapping with server, routes, hosts")]

    def need_mapping(name, value):
        if isinstance(value, dict):
            return True
        problems.append(Problem(file, name, "", repr(value)[:60], "a mapping"))
        return False

    for key, value in doc.items():
        key = str(key)
        if key == "server":
            if need_mapping(key, value):
                sections.append(_mapping_section(key, SERVER, value, file, problems))
        elif key == "routes":
            if need_mapping(key, value):
                sections.append(_routes_section(key, "default", value, file, problems))
        elif key == "hosts":
            if need_mapping(key, value):
                for names, routes in value.items():
                    name = "hosts: %s" % names
                    if need_mapping(name, routes):
                        sections.append(_routes_section(name, str(names), routes, file, problems))
        elif key == "gateway":
            if need_mapping(key, value):
                sections.append(_mapping_section(key, GATEWAY, value, file, problems))
        elif key == "cachefs":
            if need_mapping(key, value):
                sections.append(_mapping_section(key, CACHEFS, value, file, problems))
        elif key.startswith("@"):
            if need_mapping(key, value):
                sections.append(_mapping_section(key, ALIAS_SECTION, value, file, problems))
        else:
            problems.append(Problem(file, key, "", None,
                                    "a top-level key: server, routes, hosts, gateway, cachefs "
                                    "or \"@alias\""))
    return sections, problems


def parse_server(path: str, config_dir: str, name: Optional[str] = None,
                 file: Optional[str] = None) -> Tuple[ServerConfig, List[Problem]]:
    """Parse one YAML server file; returns the server and every problem found."""
    file = file or path
    name = name or os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        return ServerConfig(name=name, source=path), [
            Problem(file, "", "", None, "a readable UTF-8 file (%s)" % e)]
    sections, problems = read_sections(text, file)
    if sections is None:
        return ServerConfig(name=name, source=path), problems
    ctx = FileContext(file, config_dir, routes_label="routes")
    server = build_server(ctx, sections, name, os.path.abspath(path))
    return server, add_lines(problems + ctx.problems, lambda _: text)

