"""The raw event contract (docs/contract.md) as constants shared by the validator and the generator."""

from __future__ import annotations

import polars as pl

from etl.i18n import N_

ADDED = "contact.added"
CONNECTED = "contact.connected"
DELETED = "contact.deleted"
MERGED = "contact.merged"
EVENT_TYPES: tuple[str, ...] = (ADDED, CONNECTED, DELETED, MERGED)

# Display order of sources follows respond.io's Contacts report.
SOURCES: tuple[str, ...] = (
    "user",
    "contact_import",
    "developer_api",
    "incoming_message",
    "echo_message",
    "zapier",
    "broadcast",
)

ALLOWED_SOURCES: dict[str, frozenset[str]] = {
    ADDED: frozenset({"user", "contact_import", "developer_api", "incoming_message", "echo_message", "zapier"}),
    CONNECTED: frozenset({"developer_api", "incoming_message", "echo_message", "zapier", "broadcast", "user"}),
    DELETED: frozenset({"user"}),
    MERGED: frozenset({"user"}),
}

# Fields every event carries; nullable fields may also be absent (absent == null).
REQUIRED_FIELDS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "occurred_at",
    "workspace_id",
    "contact_id",
    "contact_name",
    "source",
)
ID_FIELDS: tuple[str, ...] = ("workspace_id", "contact_id", "channel_id", "user_id", "merged_contact_id")
TEXT_FIELDS: tuple[str, ...] = ("event_id", "event_type", "occurred_at", "contact_name", "source",
                                "channel_name", "channel_type", "user_name")

# Stored event schema (warehouse/events): one row per de-duplicated valid event.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "event_type": pl.String(),
    "occurred_at": pl.Datetime("us", "UTC"),
    "workspace_id": pl.Int64(),
    "contact_id": pl.Int64(),
    "contact_name": pl.String(),
    "source": pl.String(),
    "channel_id": pl.Int64(),
    "channel_name": pl.String(),
    "channel_type": pl.String(),
    "user_id": pl.Int64(),
    "user_name": pl.String(),
    "merged_contact_id": pl.Int64(),
    # Arrival: the landing partition and position that delivered the kept copy.
    "ingest_date": pl.Date(),
    "arrival_key": pl.String(),
}
# Columns that make up an event's content (used to tell a redelivery from a conflicting reuse of an id).
CONTENT_COLUMNS: tuple[str, ...] = tuple(c for c in EVENT_SCHEMA if c not in ("ingest_date", "arrival_key"))

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "ingest_date": pl.Date(),
    "file": pl.String(),
    "line_no": pl.Int64(),
    "reason": pl.String(),
    "event_id": pl.String(),
    "raw": pl.String(),
}

SOURCE_LABELS: dict[str, str] = {
    "user": N_("User"),
    "contact_import": N_("Contact import"),
    "developer_api": N_("Developer API"),
    "incoming_message": N_("Incoming message"),
    "echo_message": N_("Echo message"),
    "zapier": N_("Zapier"),
    "broadcast": N_("Broadcast"),
}
SOURCE_MEANINGS: dict[str, str] = {
    "user": N_("Added or changed manually by a user in the platform."),
    "contact_import": N_("Created by importing a CSV file of contacts."),
    "developer_api": N_("Created through the Developer API."),
    "incoming_message": N_("Created when a new contact messaged one of the workspace's channels."),
    "echo_message": N_("Created by a message sent to a new contact from outside the platform (echo)."),
    "zapier": N_("Created by a Zapier integration."),
    "broadcast": N_("Connected by a broadcast sent to the contact."),
}
