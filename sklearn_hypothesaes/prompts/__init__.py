"""Versioned prompt templates shipped with the package.

A template lives in ``<name>_v<version>.txt`` with a ``[system]`` and a ``[user]``
section. Placeholders are ``{field}`` and are filled by plain string replacement,
so braces inside texts or JSON examples need no escaping. A change to a template's
wording gets a new version file; the name, version and a hash of the text enter
every cache key, so an edited prompt never reuses old answers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["PromptTemplate", "available_prompts", "load_prompt"]

_FILE_RE = re.compile(r"^(?P<name>[a-z0-9_]+?)_v(?P<version>\d+)\.txt$")
_SECTION_RE = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt template: a system part and a user part.

    Attributes
    ----------
    name : str
        Template name, e.g. ``"annotate"``.
    version : int
        Template version; a new wording gets a new version.
    system : str
        System message template.
    user : str
        User message template.
    """

    name: str
    version: int
    system: str
    user: str

    @property
    def digest(self) -> str:
        """Short SHA-256 of the template text (enters cache keys)."""
        data = f"{self.system}\x00{self.user}".encode()
        return hashlib.sha256(data).hexdigest()[:16]

    @property
    def identity(self) -> dict:
        """Fields identifying this template in a cache key."""
        return {"name": self.name, "version": self.version, "digest": self.digest}

    def render(self, **fields: str) -> list[dict[str, str]]:
        """Fill the placeholders and return chat messages.

        Examples
        --------
        >>> t = load_prompt("annotate", version=1)
        >>> msgs = t.render(concept="mentions food", text="Great {pasta}.")
        >>> [m["role"] for m in msgs], "Great {pasta}." in msgs[1]["content"]
        (['system', 'user'], True)
        """
        messages = []
        for role, part in (("system", self.system), ("user", self.user)):
            content = part
            for key, value in fields.items():
                content = content.replace("{" + key + "}", value)
            if content:
                messages.append({"role": role, "content": content})
        return messages


def available_prompts() -> dict[str, list[int]]:
    """Return ``{name: [versions...]}`` for the templates shipped with the package."""
    found: dict[str, list[int]] = {}
    for entry in resources.files(__name__).iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.setdefault(match["name"], []).append(int(match["version"]))
    return {k: sorted(v) for k, v in sorted(found.items())}


@lru_cache(maxsize=32)
def load_prompt(name: str, version: int | None = None) -> PromptTemplate:
    """Load a shipped template; ``version=None`` means the latest one.

    Parameters
    ----------
    name : str
        Template name, e.g. ``"annotate"`` or ``"annotate_multi"``.
    version : int, default=None
        Version to load; the latest when None.

    Returns
    -------
    template : PromptTemplate

    Examples
    --------
    >>> t = load_prompt("annotate")
    >>> t.name, t.version >= 1
    ('annotate', True)
    """
    versions = available_prompts().get(name)
    if not versions:
        raise ValueError(
            f"No prompt template named {name!r}; available: {sorted(available_prompts())}."
        )
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise ValueError(f"Prompt {name!r} has versions {versions}, not {version!r}.")
    text = resources.files(__name__).joinpath(f"{name}_v{version}.txt").read_text("utf-8")
    parts = _SECTION_RE.split(text)
    # parts = [preamble, role, body, role, body, ...]
    sections = {role: body.strip("\n") for role, body in zip(parts[1::2], parts[2::2])}
    if "user" not in sections:
        raise ValueError(f"Prompt file {name}_v{version}.txt has no [user] section.")
    return PromptTemplate(name, version, sections.get("system", ""), sections["user"])
