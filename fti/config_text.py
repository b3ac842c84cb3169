"""Wording of configuration errors that must not repeat the contents of the file.

A configuration file contains passwords and connection strings. PyYAML's messages quote the
text they stopped at, an alias or a tag, and its string form adds an excerpt of the line,
so an error about a password line would print the password. A URL may carry a user and
password before its host. These helpers keep the problem and drop the secret.
"""

from __future__ import annotations

import re

import yaml

# The start of file text in a PyYAML message: a quote, or an alias, anchor or tag.
_FILE_TEXT = re.compile(r"['\"*&!%<\\]")


def yaml_problem(err: yaml.YAMLError) -> str:
    """Return what went wrong in a YAML file, cut before any text taken from the file."""
    problem = getattr(err, "problem", None) or getattr(err, "context", None)
    if not problem:
        return "the file is not valid YAML"
    problem = str(problem)
    found = _FILE_TEXT.search(problem)
    return problem if found is None else problem[:found.start()] + "(...)"


def url_has_credentials(url: str) -> bool:
    """Return whether ``url`` contains an '@', as a user or password before its host would add.

    The whole URL is searched, whatever its scheme: a '/', '?' or '#' in a password, or a
    URL without '//', would hide the '@' from the host part that ``urlsplit`` finds.
    """
    return "@" in url


def mask_url(url: str) -> str:
    """Return ``url`` with everything up to its last '@' replaced by ``***``."""
    if "@" not in url:
        return url
    return f"***@{url.rsplit('@', 1)[1]}"
