"""Table tests of the managedFields upgrade after a POST create."""

from __future__ import annotations

from typing import Any

import pytest

from wideep.kube.managed_fields import merge_fields, needs_upgrade, upgraded

ME = "wideep-operator"
PORT_8000 = {'k:{"port":8000,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {}}}
PORT_9000 = {'k:{"port":9000,"protocol":"TCP"}': {".": {}, "f:port": {}}}


def entry(
    manager: str, operation: str, fields: dict[str, Any], subresource: str | None = None
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "manager": manager,
        "operation": operation,
        "apiVersion": "v1",
        "time": "2026-11-28T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if subresource:
        e["subresource"] = subresource
    return e


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ({}, {}, {}),
        ({"f:spec": {"f:ports": PORT_8000}}, {}, {"f:spec": {"f:ports": PORT_8000}}),
        (
            {"f:spec": {"f:ports": PORT_8000}},
            {"f:spec": {"f:ports": PORT_9000, "f:selector": {}}},
            {"f:spec": {"f:ports": {**PORT_8000, **PORT_9000}, "f:selector": {}}},
        ),
        (
            {"f:metadata": {"f:labels": {"f:a": {}}}},
            {"f:metadata": {"f:labels": {"f:a": {}}}},
            {"f:metadata": {"f:labels": {"f:a": {}}}},
        ),
    ],
)
def test_merge_fields_is_a_set_union(a: dict[str, Any], b: dict[str, Any], want: dict[str, Any]) -> None:
    assert merge_fields(a, b) == want
    assert merge_fields(b, a) == want


def test_update_entry_of_a_create_becomes_the_apply_entry() -> None:
    created = [entry(ME, "Update", {"f:spec": {"f:ports": PORT_8000}})]
    assert needs_upgrade(created, ME)
    out = upgraded(created, ME, "2026-11-28T01:00:00Z")
    assert (
        len(out) == 1
        and out[0]["operation"] == "Apply"
        and out[0]["fieldsV1"] == {"f:spec": {"f:ports": PORT_8000}}
    )
    assert out[0]["time"] == "2026-11-28T01:00:00Z"
    assert not needs_upgrade(out, ME)


def test_upgrade_merges_into_an_existing_apply_entry_and_keeps_every_other_manager() -> None:
    other = entry("kubectl-edit", "Update", {"f:metadata": {"f:labels": {"f:x": {}}}})
    status = entry(ME, "Update", {"f:status": {}}, subresource="status")
    mf = [
        entry(ME, "Update", {"f:spec": {"f:ports": PORT_8000}}),
        other,
        entry(ME, "Apply", {"f:spec": {"f:ports": PORT_9000}}),
        status,
    ]
    out = upgraded(mf, ME, "t")
    assert other in out and status in out, "other managers and our subresource entries are left alone"
    mine = [e for e in out if e["manager"] == ME and not e.get("subresource")]
    assert len(mine) == 1 and mine[0]["operation"] == "Apply"
    assert mine[0]["fieldsV1"] == {"f:spec": {"f:ports": {**PORT_8000, **PORT_9000}}}


def test_nothing_to_upgrade() -> None:
    mf = [entry(ME, "Apply", {"f:spec": {}}), entry("someone", "Update", {"f:spec": {}})]
    assert not needs_upgrade(mf, ME) and not needs_upgrade(None, ME)
    assert upgraded(mf, ME, "t") is mf
