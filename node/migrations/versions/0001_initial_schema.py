"""Initial schema: series, instances, jobs, results, deliveries, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Written out in full (not importing node.db), so this revision keeps creating exactly this
schema however the models change later. States are VARCHAR(16) with CHECK constraints, not
native ENUMs, so they behave the same on SQLite and PostgreSQL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _state(name: str, *values: str) -> sa.Column:
    kind = sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)
    return sa.Column("state", kind, nullable=False)


def _uid(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length=64), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        _uid("study_uid"),
        _uid("series_uid"),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("sender_ae", sa.String(length=16), nullable=False),
        _time("first_received_at"),
        _time("last_received_at"),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        _time("completed_at", nullable=True),
        _state("series_state", "receiving", "complete", "routed", "ignored"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_series")),
        sa.UniqueConstraint("series_uid", name=op.f("uq_series_series_uid")),
    )
    op.create_index(op.f("ix_series_state"), "series", ["state"])
    op.create_index(op.f("ix_series_study_uid"), "series", ["study_uid"])

    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        _uid("sop_instance_uid"),
        _uid("sop_class_uid"),
        _uid("transfer_syntax_uid"),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sender_ae", sa.String(length=16), nullable=False),
        _time("received_at"),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name=op.f("fk_instances_series_id_series")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_instances_sop_instance_uid")),
    )
    op.create_index(op.f("ix_instances_series_id"), "instances", ["series_id"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        _state("job_state", "queued", "running", "sending", "done", "failed", "superseded"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("created_at"),
        _time("started_at", nullable=True),
        _time("finished_at", nullable=True),
        _time("next_attempt_at", nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        _time("heartbeat_at", nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("retryable", sa.Boolean(), nullable=True),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name=op.f("fk_jobs_series_id_series")
        ),
        sa.ForeignKeyConstraint(
            ["superseded_by"], ["jobs.id"], name=op.f("fk_jobs_superseded_by_jobs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_series_id"), "jobs", ["series_id"])
    op.create_index(op.f("ix_jobs_state"), "jobs", ["state"])

    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        _uid("sop_class_uid"),
        _uid("sop_instance_uid"),
        _uid("series_uid"),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _time("created_at"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_results_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_results_sop_instance_uid")),
    )
    op.create_index(op.f("ix_results_job_id"), "results", ["job_id"])

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        _state("delivery_state", "pending", "sent", "failed"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("created_at"),
        _time("next_attempt_at", nullable=True),
        _time("sent_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_deliveries_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_index(op.f("ix_deliveries_job_id"), "deliveries", ["job_id"])
    op.create_index(op.f("ix_deliveries_state"), "deliveries", ["state"])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        _time("at"),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("ae_title", sa.String(length=16), nullable=True),
        sa.Column("series_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["deliveries.id"], name=op.f("fk_events_delivery_id_deliveries")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_events_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name=op.f("fk_events_series_id_series")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_at", "events", ["at"])
    op.create_index(op.f("ix_events_delivery_id"), "events", ["delivery_id"])
    op.create_index(op.f("ix_events_job_id"), "events", ["job_id"])
    op.create_index(op.f("ix_events_series_id"), "events", ["series_id"])


def downgrade() -> None:
    for table in ("events", "deliveries", "results", "jobs", "instances", "series"):
        op.drop_table(table)
