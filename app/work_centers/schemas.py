"""The work center resource: identity, batch counts and timestamps."""

from __future__ import annotations

import datetime as dt

import msgspec


class WorkCenterOut(msgspec.Struct):
    id: int
    identifier: str
    name: str
    batch_count: int
    open_batch_count: int
    created_at: dt.datetime
    updated_at: dt.datetime
