"""Wording of configuration errors that must not repeat the contents of the file.

A configuration file contains passwords and connection strings. PyYAML's messages quote the
text they stopped at, an alias or a tag, and its string form adds an excerpt of the line,
so an error about a password line would print the password. A URL may carry a user and
password before its host. These helpers keep the problem and drop the secret.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import yaml

# Quoted text, and alias, anchor or tag names, in a PyYAML message.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|[*&!][^\s,]+")


def yaml_problem(err: yaml.YAMLError) -> str:
    """Return what went wrong in a YAML file, without any text taken from the file."""
    problem = getattr(err, "problem", None) or getattr(err, "context", None)
    if not problem:
        return "invalid YAML"
    return _QUOTED.sub("(...)", str(problem))


def url_has_credentials(url: str) -> bool:
    """Return whether ``url`` carries a user or password before its host."""
    return "@" in urlsplit(url).netloc


def mask_url(url: str) -> str:
    """Return ``url`` with anything before the '@' of its host part replaced by ``***``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
