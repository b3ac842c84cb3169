"""Wording of configuration errors that must not repeat the contents of the file.

A configuration file contains passwords and connection strings. PyYAML's messages quote the
text they stopped at, an alias or a tag, and its string form adds an excerpt of the line,
so an error about a password line would print the password. A URL may carry a user and
password before its host. These helpers keep the problem and drop the secret.
"""

from __future__ import annotations

import re
from typing import Any

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


# Shown in place of text with an '@' in configuration errors.
_TEXT_WITH_AT = "(not shown: it contains '@', as a credential in a URL would)"


def displayable_value(value: Any) -> Any:
    """Return ``value`` as a configuration error may show it, or None to show nothing.

    Values that may hide a secret are not shown. A mapping, or a list of them, may be a
    whole section in the wrong place. Bytes may be a secret given as !!binary, and text with
    an '@' may be a URL with its credentials.
    """
    if isinstance(value, str) and "@" in value:
        return _TEXT_WITH_AT
    if isinstance(value, (dict, bytes, set, frozenset)):
        return None
    if isinstance(value, (list, tuple)) and not all(_plain_item(item) for item in value):
        return None
    return value


def _plain_item(item: Any) -> bool:
    """Return whether a list item is a number, boolean, null or text without an '@'."""
    if item is None or isinstance(item, (int, float, bool)):
        return True
    return isinstance(item, str) and "@" not in item
