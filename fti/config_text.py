"""Wording of configuration errors that must not repeat what the file says.

A configuration file holds passwords and connection strings. PyYAML's messages quote the
text they stopped at, an alias or a tag, and its string form adds an excerpt of the line,
so an error about a password line would print the password. These helpers keep the
problem and drop the file's own text.
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
