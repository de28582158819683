"""Field ownership of objects the operator created with a plain POST.

A create records the fields it set under the operator's field manager with operation ``Update``; a later
server-side apply by the same manager is tracked as a separate ``Apply`` entry. Fields held only by the
``Update`` entry would never be removed by an apply that drops them (a Service port whose number changed
stays next to the new one). Before its first apply to such an object the operator moves the ``Update``
entry's fields into its ``Apply`` entry, the same upgrade client-go offers for client-side apply
(k8s.io/client-go/util/csaupgrade). Pure: no I/O.
"""

from __future__ import annotations

import copy
from typing import Any


def merge_fields(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The union of two FieldsV1 sets (nested dicts whose leaves are ``{}``)."""
    out = copy.deepcopy(a)
    for key, sub in b.items():
        out[key] = merge_fields(out[key], sub) if key in out else copy.deepcopy(sub)
    return out


def needs_upgrade(managed_fields: list[dict[str, Any]] | None, manager: str) -> bool:
    """Whether ``manager`` holds fields of the main resource through an ``Update`` entry."""
    return any(
        e.get("manager") == manager and e.get("operation") == "Update" and not e.get("subresource")
        for e in managed_fields or []
    )


def upgraded(managed_fields: list[dict[str, Any]], manager: str, now: str) -> list[dict[str, Any]]:
    """``managed_fields`` with ``manager``'s ``Update`` entries of the main resource folded into its
    ``Apply`` entry (created if missing); every other entry as it was."""
    updates = [
        e
        for e in managed_fields
        if e.get("manager") == manager and e.get("operation") == "Update" and not e.get("subresource")
    ]
    if not updates:
        return managed_fields
    applied = next(
        (e for e in managed_fields if e.get("manager") == manager and e.get("operation") == "Apply"), None
    )
    fields: dict[str, Any] = dict((applied or {}).get("fieldsV1") or {})
    for e in updates:
        fields = merge_fields(fields, e.get("fieldsV1") or {})
    entry = {
        "manager": manager,
        "operation": "Apply",
        "apiVersion": (applied or updates[-1]).get("apiVersion", "v1"),
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    kept = [e for e in managed_fields if e is not applied and not any(e is u for u in updates)]
    return [*kept, entry]
