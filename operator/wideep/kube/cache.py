"""In-memory view of the cluster fed by the watches: the ParallelDeployments and the objects they own.

What a pod event means to the gang logic (is it news, does the pod count as ready) is not decided here: the
cache is handed a PodClassifier by its user (wideep.reconcile.pods.CLASSIFIER)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wideep.api import constants as c
from wideep.kube.managed_fields import needs_upgrade

Key = tuple[str, str]  # (namespace, name) of a ParallelDeployment


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


_META_KEEP = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "deletionTimestamp",
    "creationTimestamp",
)
UPDATE_OWNED = "wideepUpdateOwned"  # a trimmed object's flag: see fields.py
_SPEC_KEEP = {
    "Pod": ("nodeName",),
    "Service": ("selector", "ports", "publishNotReadyAddresses", "clusterIP", "type"),
}


def trim(obj: dict[str, Any]) -> dict[str, Any]:
    """Keep only what the reconciler reads: 1600 cached pods cost a few MB instead of tens
    (managedFields and the full pod spec are most of a pod's size)."""
    kind = obj.get("kind") or "Pod"
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    out: dict[str, Any] = {
        "kind": kind,
        "apiVersion": obj.get("apiVersion", "v1"),
        "metadata": {k: meta[k] for k in _META_KEEP if k in meta},
        "spec": {k: spec[k] for k in _SPEC_KEEP.get(kind, ()) if k in spec},
    }
    if kind == "Service" and needs_upgrade(meta.get("managedFields"), c.FIELD_MANAGER):
        out[UPDATE_OWNED] = True  # created by POST: its fields move to our Apply entry before the next apply
    if "status" in obj and kind == "Pod":
        st = obj["status"] or {}
        out["status"] = {
            k: st[k]
            for k in (
                "phase",
                "reason",
                "message",
                "conditions",
                "containerStatuses",
                "initContainerStatuses",
            )
            if k in st
        }
    return out


def owner_key(obj: dict[str, Any]) -> Key | None:
    """The ParallelDeployment an object belongs to: its controller ownerReference, else its label.
    Labels can be edited by anyone; the ownerReference is what the garbage collector follows."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    if not ns:
        return None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == c.KIND and ref.get("apiVersion", "").startswith(c.GROUP + "/"):
            return (ns, str(ref.get("name")))
    name = (meta.get("labels") or {}).get(c.LABEL_DEPLOYMENT)
    return (ns, name) if name else None


@dataclass(frozen=True)
class PodClassifier:
    """What the cache asks of a pod on every event. ``facts``: what the decisions act on (two versions with
    equal facts differ only in progress); ``incident``: a new pod that is already news (failed, deleting...);
    ``counts_ready``: a pod that counts towards its group's readiness."""

    facts: Callable[[dict[str, Any]], tuple[Any, ...]]
    incident: Callable[[dict[str, Any]], bool]
    counts_ready: Callable[[dict[str, Any]], bool]


def _take(keys: set[Key], key: Key) -> bool:
    """Whether ``key`` is in ``keys``, removing it: a flag that is asked once."""
    present = key in keys
    keys.discard(key)
    return present


class Cache:
    """Latest known version of every ParallelDeployment and of every object they own.

    Filled by the watch events and by the responses of our own writes (read-your-writes), and
    never moved backwards: an older resourceVersion arriving late is ignored.
    """

    TOMBSTONES = 100_000

    def __init__(self, classify: PodClassifier) -> None:
        self.classify = classify
        self.pdeps: dict[Key, dict[str, Any]] = {}
        self.children: dict[str, dict[Key, dict[str, dict[str, Any]]]] = {"Pod": {}, "Service": {}}
        # uids seen deleted: a late, out-of-order event of a deleted object must not bring it back.
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self.last_pod_gone: dict[Key, float] = {}
        self._where: dict[str, tuple[str, Key, str]] = {}  # uid -> (kind, owner key, name)
        # Group completion, for the work queue (WorkQueue.add urgent): the names of each group's Ready pods,
        # how many pods its current plan has (set by the reconciler), and the groups whose last pod just
        # became Ready.
        self._ready: dict[Key, set[str]] = {}
        self.expected_pods: dict[Key, int] = {}
        self._completed: set[Key] = set()
        # Groups with a watch event since their last notice that decide() acts on (see pop_changed): the rest
        # are progress figures, which the work queue may batch.
        self._changed: set[Key] = set()
        # (kind, group, name) of the creates the reconciler has in flight (see creating()).
        self._creating: set[tuple[str, Key, str]] = set()
        # Groups with a status write in flight: the resourceVersions of their events meanwhile (see
        # held_pdep_event()).
        self._status_writes: dict[Key, list[str]] = {}

    def _bury(self, uid: str | None) -> None:
        if uid:
            self._tombstones[uid] = None
            while len(self._tombstones) > self.TOMBSTONES:
                self._tombstones.popitem(last=False)

    def _newer(self, obj: dict[str, Any], old: dict[str, Any] | None) -> bool:
        """Whether obj should replace old. resourceVersions come from one etcd revision counter, so an
        event of a deleted pod never wins over the pod later created under the same name."""
        if obj["metadata"].get("uid") in self._tombstones:
            return False
        return old is None or _rv(obj) >= _rv(old)

    def put_pdep(self, obj: dict[str, Any]) -> Key:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if self._newer(obj, self.pdeps.get(key)):
            self.pdeps[key] = obj
        return key

    def begin_status_write(self, key: Key) -> None:
        self._status_writes[key] = []

    def end_status_write(self, key: Key, written: dict[str, Any] | None) -> bool:
        """The status write of ``key`` is answered (``written``: the object it returned; None: it failed).
        Whether an event held meanwhile (held_pdep_event) was another version than ours: a pass is due."""
        seen = self._status_writes.pop(key, [])
        ours = written["metadata"].get("resourceVersion") if written is not None else None
        return any(rv != ours for rv in seen)

    def held_pdep_event(self, key: Key, obj: dict[str, Any]) -> bool:
        """Whether the event of ``obj`` (already put) waits for the answer of a status write in flight. The
        watch often brings the echo of our own status write before its answer; its resourceVersion is only
        known from that answer, and end_status_write() tells whether it was ours (no pass: the pass that
        wrote it decided on it) or someone else's change."""
        seen = self._status_writes.get(key)
        if seen is None:
            return False
        seen.append(str(obj["metadata"].get("resourceVersion")))
        return True

    def delete_pdep(self, obj: dict[str, Any]) -> Key:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        self._bury(meta.get("uid"))
        old = self.pdeps.get(key)
        if old is not None and old["metadata"].get("uid") == meta.get("uid"):
            del self.pdeps[key]
        return key

    def _set_ready(self, key: Key, name: str, ready: bool) -> bool:
        """Record a pod's readiness; True when it broke a complete group (a Ready group lost a pod)."""
        names = self._ready.setdefault(key, set())
        before = len(names)
        if ready:
            names.add(name)
        else:
            names.discard(name)
            if not names:
                del self._ready[key]  # no entry left behind by a deleted group
        expected = self.expected_pods.get(key)
        if expected and before < expected <= len(names):
            self._completed.add(key)
        return expected is not None and len(names) < expected <= before

    def pop_completed(self, key: Key) -> bool:
        """Whether the latest pod event made every pod of the group's plan Ready (asked once)."""
        return _take(self._completed, key)

    def pop_changed(self, key: Key) -> bool:
        """Whether a watch event since the last call changed what decide() acts on for the group: a pod that
        appeared, vanished or changed its decision_facts(), a Service, or a Ready group losing a pod. Pod
        events that only move progress figures (bound to a node, Running, Ready while the group comes up)
        do not count (asked once)."""
        return _take(self._changed, key)

    def creating(self, key: Key, objects: list[dict[str, Any]], in_flight: bool) -> None:
        """Mark (``in_flight``) or unmark the reconciler's writes of ``objects`` for group ``key``. Only those the
        cache does not hold are creates, and only an echo of an object the cache does not hold is affected
        (put_child), so the whole list of a pass's writes can be given.

        The watch often brings a created object before the create's answer does. Such an echo is the object
        the pass that creates it has decided on, like the answer (put_child note=False): it is not noted as a
        change, so it does not cost the group another pass right after its creates. An echo carrying an incident (the
        pod already Failed, deleted, restarted or unschedulable) still is."""
        for obj in objects:
            entry = (obj["kind"], key, obj["metadata"]["name"])
            if in_flight:
                self._creating.add(entry)
            else:
                self._creating.discard(entry)

    def forget(self, key: Key) -> None:
        """The group is gone: drop its completion bookkeeping (its children leave with their events)."""
        self.expected_pods.pop(key, None)
        self._completed.discard(key)
        self._changed.discard(key)

    def put_child(self, obj: dict[str, Any], *, note: bool = True) -> list[Key]:
        """Cache a child; returns the groups it concerns: its owner, and first the group it was cached under
        until now if its owner changed (someone edited the ownerReference or label: that group lost a rank).
        ``note``: a watch event or a list, which pop_changed() reports when it changes what decide() acts on;
        False for the answers to the reconciler's own requests, which it has decided on."""
        kind = obj.get("kind") or "Pod"
        uid = obj["metadata"].get("uid")
        key = owner_key(obj)
        if key is None:
            gone = self.delete_child(obj, bury=False, note=note)  # no longer ours (owner and label removed)
            return [] if gone is None else [gone]
        bucket = self.children[kind].setdefault(key, {})
        name = obj["metadata"]["name"]
        old = bucket.get(name)
        if not self._newer(obj, old):
            return [key]
        if old is not None and _rv(obj) == _rv(old) and old["metadata"].get("uid") == uid:
            # The version we hold (the echo of our own write, or a relist): nothing to take in. Kept as is,
            # a pod marked deleting (mark_deleting) stays so until its delete is seen.
            return [key]
        concerned = [key]
        changed = kind != "Pod" or old is None
        if old is None and (kind, key, name) in self._creating:
            changed = False  # the echo of a create in flight (see creating())
        if uid:
            where = self._where.get(uid)
            if where is not None and where != (kind, key, name):
                self.children[where[0]].get(where[1], {}).pop(where[2], None)
                changed = True
                if where[0] == "Pod":
                    self._set_ready(where[1], where[2], False)
                if note:
                    self._changed.add(where[1])
                if where[1] != key:
                    concerned.insert(0, where[1])
            self._where[uid] = (kind, key, name)
        trimmed = bucket[name] = trim(obj)
        if kind == "Pod":
            # as decide counts ready ranks
            changed = self._set_ready(key, name, self.classify.counts_ready(trimmed)) or changed
            if not changed:
                facts = self.classify.facts
                changed = self.classify.incident(trimmed) if old is None else facts(old) != facts(trimmed)
        if note and changed:
            self._changed.add(key)
        return concerned

    def delete_child(self, obj: dict[str, Any], bury: bool = True, *, note: bool = True) -> Key | None:
        kind = obj.get("kind") or "Pod"
        meta = obj["metadata"]
        uid = meta.get("uid")
        if bury:
            self._bury(uid)
        where = self._where.pop(uid, None) if uid else None
        key = where[1] if where is not None else owner_key(obj)
        if key is None:
            return None
        name = where[2] if where is not None else meta["name"]
        bucket = self.children[kind].get(key, {})
        old = bucket.get(name)
        if old is not None and old["metadata"].get("uid") == uid:
            del bucket[name]
            if note:
                self._changed.add(key)
            if kind == "Pod":
                self._set_ready(key, name, False)
                if bury:
                    self.last_pod_gone[key] = time.monotonic()
        return key

    def replace_children(self, kind: str, namespace: str | None, items: list[dict[str, Any]]) -> set[Key]:
        """After a (re)list: put every listed object, and drop cached ones the list no longer has
        (deleted while no watch was open). Returns the keys that changed."""
        listed = {o["metadata"].get("uid") for o in items}
        touched: set[Key] = set()
        for key, bucket in self.children[kind].items():
            if namespace is not None and key[0] != namespace:
                continue
            for name, obj in list(bucket.items()):
                if obj["metadata"].get("uid") not in listed:
                    # Dropped, not buried: the list is filtered by our label, so an object missing from it
                    # may still exist with that label edited away, and must be able to come back (from the
                    # reconciler's listing by owner, or once the label is restored). The watch resumes at
                    # the list's resourceVersion, so no late event of a truly deleted object follows.
                    self._where.pop(obj["metadata"].get("uid"), None)
                    del bucket[name]
                    self._changed.add(key)
                    if kind == "Pod":
                        self._set_ready(key, name, False)
                        self.last_pod_gone[key] = time.monotonic()
                    touched.add(key)
        for obj in items:
            obj.setdefault("kind", kind)
            touched.update(self.put_child(obj))
        return touched

    def started(self) -> None:
        """At operator start, after the first lists: the pods of a group that ran before may have vanished
        moments before this process began, and nobody recorded when. Count the settle before reusing their
        names (Reconciler._act) from now: an operator killed right after a group's old pods were gone would
        otherwise have its successor create the new ones while late deletes by name (kwok v0.8.0 sends them
        without a uid precondition) still hit them. A new group (no status yet) never had pods deleted."""
        now = time.monotonic()
        for key, obj in self.pdeps.items():
            if (obj.get("status") or {}).get("groupGeneration"):
                self.last_pod_gone.setdefault(key, now)

    def mark_deleting(self, kind: str, key: Key, name: str, uid: str, now: str) -> None:
        obj = self.children[kind].get(key, {}).get(name)
        if obj is not None and obj["metadata"].get("uid") == uid:
            obj["metadata"]["deletionTimestamp"] = obj["metadata"].get("deletionTimestamp") or now
            if kind == "Pod":
                self._set_ready(key, name, False)

    def owned(self, kind: str, key: Key, owner_uid: str) -> list[dict[str, Any]]:
        out = []
        for obj in self.children[kind].get(key, {}).values():
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == owner_uid for r in refs):
                out.append(obj)
        return out
