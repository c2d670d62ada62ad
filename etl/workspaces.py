"""The workspaces dimension: `{landing}/workspaces.json`, validated once per run."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfoNotFoundError

import polars as pl

from etl.errors import InputError
from etl.i18n import DEFAULT_LOCALE, LocaleError, parse_locale
from etl.windows import zone

log = logging.getLogger(__name__)

WORKSPACE_SCHEMA: dict[str, pl.DataType] = {
    "workspace_id": pl.Int64(),
    "name": pl.String(),
    "timezone": pl.String(),
    "locale": pl.String(),
}


class WorkspacesError(InputError):
    """workspaces.json is missing or unusable as a whole."""


@dataclass(frozen=True)
class Workspaces:
    """Usable workspaces, plus those that are listed but broken (reported, not processed)."""

    frame: pl.DataFrame
    broken: dict[int, str]

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(self.frame["workspace_id"].to_list())


def _valid_timezone(name: object) -> bool:
    return isinstance(name, str) and _known_zone(name)


@lru_cache(maxsize=4096)  # a thousand workspaces share a few dozen zones
def _known_zone(name: str) -> bool:
    """A zone both engines that use it know: zoneinfo (report days, windows) and Polars (local times). zoneinfo
    alone accepts names Polars refuses (`Factory`, `posixrules`, `right/UTC`) and raises on folders (`Europe`)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        zone(name)
        pl.Series([0], dtype=pl.Datetime("us", "UTC")).dt.convert_time_zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError, pl.exceptions.PolarsError):
        return False
    return True


def _locale(value: object) -> str:
    """The canonical BCP 47 tag, or `bad_locale:<what was wrong>`."""
    try:
        return parse_locale(value)
    except LocaleError as err:
        return f"bad_locale:{err}"


def _storable(text: str) -> bool:
    """Text UTF-8 can hold (JSON can spell a lone surrogate such as "\\ud800"; UTF-8 cannot store it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_workspaces(data: bytes, source: str = "workspaces.json") -> Workspaces:
    """Parse the dimension; a workspace with a bad time zone or locale is listed in `broken` (its events are
    quarantined until workspaces.json is fixed and the night re-run), the others proceed."""
    try:
        items = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise WorkspacesError(f"{source} is not valid JSON ({err}); fix the file and re-run the night") from None
    if not isinstance(items, list):
        raise WorkspacesError(f"{source} must be a JSON array of workspace objects")
    rows: dict[int, tuple[int, str, str, str]] = {}
    broken: dict[int, str] = {}
    for position, item in enumerate(items):
        wid = item.get("workspace_id") if isinstance(item, dict) else None
        if type(wid) is not int or not 0 < wid < 2**63:
            log.error("%s entry %d has no valid workspace_id; skipped", source, position)
            continue
        name, tz = item.get("name"), item.get("timezone")
        if wid in rows or wid in broken:
            broken[wid] = "duplicate_workspace_id"
            rows.pop(wid, None)
        elif not isinstance(name, str) or not _storable(name):
            broken[wid] = "bad_name"
        elif not _valid_timezone(tz):
            broken[wid] = f"unknown_timezone:{tz}"
        elif (locale := _locale(item.get("locale", DEFAULT_LOCALE))).startswith("bad_locale:"):
            broken[wid] = locale
        else:
            rows[wid] = (wid, name, str(tz), locale)
    for wid, why in sorted(broken.items()):
        log.error("workspace %d in %s is unusable (%s); its events are quarantined", wid, source, why)
    frame = pl.DataFrame(sorted(rows.values()), schema=WORKSPACE_SCHEMA, orient="row")
    return Workspaces(frame=frame, broken=broken)
