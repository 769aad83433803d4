"""Allow-lists: where a list's allow entries live in Redis. No I/O.

A list NAME's allow-list is an ordinary list (the same band index, entries, snapshot, version,
mirror and exact lookups) stored under the name ``NAME/allow``. ``/`` is outside the characters
a list name may use (``guard.bands.LIST_NAME``), so no user list can ever take that name, and
the allow-list's keys share their own hash tag ``{NAME/allow}``: like any list it lives on one
Redis Cluster slot, and nothing reads it together with NAME in one command.

The allow-list belongs to NAME: ``Store.lists`` leaves it out (``Store.allow_lists`` has it),
``Store.drop(NAME)`` drops it too, and ``Store.rename`` moves it with NAME.

The rule is applied frame by frame (guard.verdict.decide): :func:`numbered` gives each frame of
a request its own number for lookups made one frame at a time.
"""

from __future__ import annotations

import dataclasses

from guard.bands import is_list_name, validate_list_name
from guard.hashing import FrameHash

#: What a list's name gets to name its allow-list (``/``: never in a list name).
ALLOW_SUFFIX = "/allow"


def allow_list(list_name: str) -> str:
    """The stored name of ``list_name``'s allow-list (ValueError for an invalid list name)."""
    return validate_list_name(list_name) + ALLOW_SUFFIX


def owner_of(stored_name: str) -> str | None:
    """The list whose allow-list ``stored_name`` is, else None (a user list, or no name)."""
    if not stored_name.endswith(ALLOW_SUFFIX):
        return None
    owner = stored_name[: -len(ALLOW_SUFFIX)]
    return owner if is_list_name(owner) else None


def validate_stored_name(name: str) -> str:
    """``name`` if it names a list or a list's allow-list, else ValueError saying the rule."""
    if owner_of(name) is not None:
        return name
    return validate_list_name(name)


def numbered(frames: list[FrameHash]) -> list[FrameHash]:
    """The frames with their index in ``frames`` as their frame number (``Match.frame`` then
    names one frame of the request: several images each have a frame 0), variants kept."""
    renumbered = []
    for index, frame in enumerate(frames):
        copy = dataclasses.replace(frame, frame=index)
        if "_variants" in frame.__dict__:
            object.__setattr__(copy, "_variants", frame.__dict__["_variants"])
        renumbered.append(copy)
    return renumbered
