"""INI files → sections → model.

A small hand-written splitter rather than configparser: a `[routes:line]`
section repeats keys (`/ = static dir`, `/ = app.py:app`) and starts with a bare
host-names line, and both need file order, which configparser's key dict loses.
The accepted syntax is configparser's: `key = value` (or `key: value` outside
routes), `;`/`#` comment lines, inline comments after whitespace, indented
continuation lines, repeated sections merged.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from .build import (ALIAS_SECTION, CACHEFS, GATEWAY, GLOBAL, ROUTES, SERVER, SMTPDA,
                    FileContext,
                    RawSection, build_global, build_server)
from .errors import Problem
from .model import GlobalConfig, ServerConfig
from .where import add_lines

_INLINE_COMMENT = re.compile(r"\s[;#].*$")
_HEADER = re.compile(r"\[([^\]]*)\]")


def _section_kind(name: str) -> str:
    low = name.lower()
    if low == "server":
        return SERVER
    if low in ("routes:line", "routes"):
        return ROUTES
    if low == "global":
        return GLOBAL
    if low == "gateway":
        return GATEWAY
    if low == "cachefs":
        return CACHEFS
    if low == "smtpda":
        return SMTPDA
    if name.startswith("@"):
        return ALIAS_SECTION
    return ""


def read_sections(text: str, file: str, implicit_global: bool = False
                  ) -> Tuple[List[RawSection], List[Problem]]:
    """Split INI text into sections; syntax problems are returned, not raised."""
    sections: List[RawSection] = []
    by_name = {}                   # merged sections (strict=False), but routes stay apart
    problems: List[Problem] = []
    current: Optional[RawSection] = None
    if implicit_global:
        current = by_name["global"] = RawSection(name="global", kind=GLOBAL)
        sections.append(current)
    key_indent = 0                 # a line indented deeper than its key continues the value
    first_line = {}                # (section, key) → the line that set it first
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in ";#":
            continue
        stripped = _INLINE_COMMENT.sub("", stripped).strip()
        header = _HEADER.fullmatch(stripped)
        if header:
            name = header.group(1).strip()
            kind = _section_kind(name)
            key = name.lower() if kind != ALIAS_SECTION else name
            if kind != ROUTES and key in by_name:
                current = by_name[key]
            else:
                current = RawSection(name=name, kind=kind)
                sections.append(current)
                by_name[key] = current
            key_indent = 1 << 30       # no continuation right after a header
            continue
        if current is None:
            problems.append(Problem(file, "", "", stripped, "a [section] header first"))
            continue
        if current.kind == ROUTES:
            # Targets contain ':' (app.py:app), so only '=' separates a route.
            prefix, eq, target = stripped.partition("=")
            current.entries.append((prefix.strip(), target.strip()) if eq else (stripped, None))
            continue
        indent = len(line) - len(line.lstrip())
        if indent > key_indent and current.entries and current.entries[-1][1] is not None:
            key, value = current.entries[-1]
            current.entries[-1] = (key, (value + "\n" + stripped) if value else stripped)
            continue
        key_indent = indent
        cut = min((i for i in (stripped.find("="), stripped.find(":")) if i >= 0), default=-1)
        if cut < 0:
            current.entries.append((stripped, None))
            continue
        key, value = stripped[:cut].strip(), stripped[cut + 1:].strip()
        seen = first_line.setdefault((id(current), key.lower()), number)
        if seen != number:
            # one value per key: the later one would silently win
            problems.append(Problem(file, current.name, key, value,
                                    "the key once (it is set on line %d already)" % seen,
                                    line=number))
            continue
        current.entries.append((key, value))
    return sections, problems


def _read(path: str, file: str) -> Tuple[str, List[Problem]]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), []
    except (OSError, UnicodeDecodeError) as e:
        return "", [Problem(file, "", "", None, "a readable UTF-8 file (%s)" % e)]


def parse_server(path: str, config_dir: str, name: Optional[str] = None,
                 file: Optional[str] = None) -> Tuple[ServerConfig, List[Problem]]:
    """Parse one INI server file; returns the server and the problems found (all of them)."""
    file = file or path
    name = name or os.path.splitext(os.path.basename(path))[0]
    text, problems = _read(path, file)
    if problems:
        return ServerConfig(name=name, source=path), problems
    sections, problems = read_sections(text, file)
    ctx = FileContext(file, config_dir)
    server = build_server(ctx, sections, name, os.path.abspath(path))
    return server, add_lines(problems + ctx.problems, lambda _: text)


def parse_global(path: str, config_dir: str, file: Optional[str] = None, lenient: bool = False
                 ) -> Tuple[GlobalConfig, List[Problem]]:
    """skitaid.conf [global] → GlobalConfig; a missing file gives the defaults.

    `lenient`: keys above any section header count as [global] ones, so that
    a broken or missing header still gives the keys that can be read (for
    stop/status, which only need to find the running master)."""
    file = file or path
    if not os.path.exists(path):
        return GlobalConfig(config_dir=config_dir), []
    text, problems = _read(path, file)
    if problems:
        return GlobalConfig(config_dir=config_dir), problems
    sections, problems = read_sections(text, file, implicit_global=lenient)
    ctx = FileContext(file, config_dir)
    config = build_global(ctx, sections)
    return config, add_lines(problems + ctx.problems, lambda _: text)
