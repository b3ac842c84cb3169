"""Wording of configuration errors that must not repeat the contents of the file.

A configuration file contains passwords and connection strings. PyYAML's messages quote the
text they stopped at, an alias or a tag, and its string form adds an excerpt of the line,
so an error about a password line would print the password. A URL may carry a user and
password before its host. These helpers keep the problem and drop the secret.
"""

from __future__ import annotations

import re

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
    """Return whether ``url`` has an '@' after its scheme, as a user or password would add.

    The whole rest of the URL is searched, not only the host part that ``urlsplit`` finds:
    a '/', '?' or '#' in a password ends that part early and hides the '@' behind it.
    """
    return "@" in url.partition("://")[2]


def mask_url(url: str) -> str:
    """Return ``url`` with everything between its scheme and its last '@' replaced by ``***``."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
