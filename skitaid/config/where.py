"""The line a problem is on, found again in its file's text.

The readers hand build.py sections of (key, value) pairs, the way
configparser would, without line numbers; every Problem names its section
and key as written. For `file:line` messages (nginx -t style) this finds
them in the text: INI by scanning the lines of the named section, YAML
through PyYAML's nodes, which keep their start marks.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, List, Optional

from .errors import Problem

_INLINE_COMMENT = re.compile(r"\s[;#].*$")
_HEADER = re.compile(r"\[([^\]]*)\]")


def _norm(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def _best(candidates, found):
    """candidates: [(line, value)]; the one whose value is `found`, else one
    holding it (a member of a list), else the first; None if there are none."""
    if not candidates:
        return None
    if found is not None:
        found = str(found).strip()
        for line, value in candidates:
            if value == found:
                return line
        for line, value in candidates:
            if found and found in value:
                return line
        for line, value in candidates:     # a relative file name, found as its full path
            if value and found.endswith("/" + value):
                return line
    return candidates[0][0]


def ini_line(text: str, section: str, key: str, found: Optional[str] = None) -> int:
    """1-based line of `key` in `[section]` (of the section itself when the key is
    not there, or is ""); 0 when neither is found."""
    headers, keys, bare = [], [], []
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped[0] in ";#":
            continue
        stripped = _INLINE_COMMENT.sub("", stripped).strip()
        header = _HEADER.fullmatch(stripped)
        if header:
            current = header.group(1).strip()
            if section and current.lower() == section.lower():
                headers.append(number)
            continue
        inside = current is not None and section and current.lower() == section.lower()
        if not section or inside:
            bare.append((number, stripped))
        if not inside:
            continue
        if current.lower().startswith("routes"):
            name, eq, value = stripped.partition("=")
        else:
            cut = min((i for i in (stripped.find("="), stripped.find(":")) if i >= 0),
                      default=-1)
            name, eq, value = (stripped[:cut], "=", stripped[cut + 1:]) if cut >= 0 \
                else (stripped, "", "")
        if eq:
            keys.append((_norm(name), number, value.strip()))
    if key:
        line = _best([(n, v) for k, n, v in keys if k == _norm(key)], found)
        if line is None:        # a stray word where a route or key should be
            line = _best([(n, v) for n, v in bare if v == key.strip()], None)
        if line is not None:
            return line
    elif found is not None:
        # a line that is no `key = value` (host names, a stray word)
        line = _best([(n, v) for n, v in bare if v == str(found).strip()], None)
        if line is not None:
            return line
    return headers[0] if headers else 0


def yaml_line(text: str, section: str, key: str, found: Optional[str] = None) -> int:
    """The same for a YAML server file: section "server", "routes", "@name" or
    "hosts: NAMES" (a mapping under the top-level `hosts`)."""
    try:
        import yaml
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except Exception:
        return 0
    if not isinstance(root, yaml.MappingNode):
        return 0

    def child(node, name):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and str(k.value) == name:
                    return k, v
        return None, None

    if section.startswith("hosts: "):
        _, hosts = child(root, "hosts")
        sec_key, sec_node = child(hosts, section[len("hosts: "):])
    else:
        sec_key, sec_node = child(root, section)
    if sec_key is None:
        return 0
    if key and isinstance(sec_node, yaml.MappingNode):
        candidates = []
        for k, v in sec_node.value:
            if not isinstance(k, yaml.ScalarNode) or _norm(str(k.value)) != _norm(key):
                continue
            if isinstance(v, yaml.SequenceNode):      # routes: a list of targets
                candidates += [(item.start_mark.line + 1, str(item.value).strip())
                               for item in v.value if isinstance(item, yaml.ScalarNode)]
            candidates.append((k.start_mark.line + 1,
                               str(v.value).strip() if isinstance(v, yaml.ScalarNode) else ""))
        line = _best(candidates, found)
        if line is not None:
            return line
    return sec_key.start_mark.line + 1


def add_lines(problems: Iterable[Problem], text_of: Callable[[str], Optional[str]]) -> List[Problem]:
    """Each problem with its line, where `text_of(problem.file)` gives the file's
    text (None: not known) and the file name says INI or YAML."""
    out = []
    texts = {}
    for p in problems:
        if not p.line:
            if p.file not in texts:
                texts[p.file] = text_of(p.file)
            text = texts[p.file]
            if text:
                find = yaml_line if p.file.endswith((".yaml", ".yml")) else ini_line
                line = find(text, p.section, p.key, p.found)
                if line:
                    p = dataclasses.replace(p, line=line)
        out.append(p)
    return out


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None
