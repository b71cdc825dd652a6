"""Printing a migration status; shared by the root, dev and prod status tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks._cli import emit_json, finish, out, table

if TYPE_CHECKING:
    from pgshift.api import Drift
    from pgshift.settings import Settings

DRIFT_HELP = ("compare the live schema with what the applied migrations make (on by default: one query "
              "against the snapshot stored when they were applied); --no-drift skips it")


def show(settings: Settings, as_json: bool, drift: bool = True) -> None:
    from pgshift import api

    status = api.status(settings, drift=drift)
    if as_json:
        emit_json(status.as_json())
    else:
        out(f"{status.environment}: {status.target}")
        if status.migrations:
            rows = [(m.id, m.state + (" (template not written yet)" if m.empty else ""),
                     f"{m.applied_at:%Y-%m-%d %H:%M:%S}" if m.applied_at else "",
                     f"{m.duration_ms} ms" if m.duration_ms is not None else "", m.detail or "")
                    for m in status.migrations]
            out(table(["migration", "state", "applied at", "took", "note"], rows))
        if status.drift is not None:
            show_drift(status.drift)
        _show_deploy(status.extra)
        out(status.summary())
    finish(status.exit_code)


def show_drift(drift: Drift) -> None:
    if drift.method == "snapshot":
        where = "against the catalog snapshot stored when they were applied"
    else:
        stored = "; stored now, so the next check is one query" if drift.stored else ""
        where = (f"no snapshot stored for these migrations (applied before snapshots were kept): "
                 f"{drift.replayed} replayed on {drift.shadow}{stored}")
    if not drift.items:
        out(f"drift: none; the schema is what its migrations make ({where})")
        return
    out(f"drift: {len(drift.items)} difference(s) from what the migrations make ({where}):")
    marks = {"unexpected": "+", "missing": "-", "changed": "~"}
    for item in drift.items:
        out(f"  {marks.get(item.change, '?')} {item.describe()}")


def _show_deploy(extra: dict[str, Any]) -> None:
    """The last deploy and the maintenance flag (only when on), from ``Status.extra``."""
    last = extra.get("last_deploy")
    if last:
        dead = " (its process died: the next deploy finishes the job)" if last["died"] else ""
        out(f"last {last['describe']}{dead}")
    flag = extra.get("maintenance")
    if flag and flag["enabled"]:
        why = (" -- LEFT ON by a deploy that died; the next deploy turns it off, or inv prod.maintenance off"
               if flag["left_by_crash"] else "")
        out(f"{flag['describe']}{why}")
