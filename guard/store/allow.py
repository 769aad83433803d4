"""Allow-lists: where a list's allow entries live in Redis. No I/O.

A list NAME's allow-list is an ordinary list (the same band index, entries, snapshot, version,
mirror and exact lookups) stored under the name ``NAME/allow``. ``/`` is outside the characters
a list name may use (``guard.bands.LIST_NAME``), so no user list can ever take that name, and
the allow-list's keys share their own hash tag ``{NAME/allow}``: like any list it lives on one
Redis Cluster slot, and nothing reads it together with NAME in one command.

The allow-list belongs to NAME: ``Store.lists`` leaves it out (``Store.allow_lists`` has it),
``Store.drop(NAME)`` drops it too, and ``Store.rename`` moves it with NAME.
"""

from __future__ import annotations

from guard.bands import is_list_name, validate_list_name

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
