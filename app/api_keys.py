"""API keys: generated here, shown once, stored only as SHA-256 hashes.

    python -m app.api_keys create <name>   # prints the new key once
    python -m app.api_keys list            # id, name, created, revoked (never the key)
    python -m app.api_keys revoke <id>

A running api picks a change up within `KeyRing.REFRESH_SECONDS` (app/middleware.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import secrets
import sys
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dispose_engine, transaction
from app.models import ApiKey

KEY_PREFIX = "pc_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(session: AsyncSession, name: str) -> tuple[ApiKey, str]:
    """A new key row; returns it with the plain key, which is not stored anywhere."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(key))
    session.add(row)
    await session.flush()
    return row, key


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list((await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars().all())


async def revoke_key(session: AsyncSession, key_id: int) -> ApiKey | None:
    """Mark a key revoked (kept for the record); None if there is no such key."""
    row = await session.get(ApiKey, key_id, with_for_update=True)
    if row is not None and row.revoked_at is None:
        row.revoked_at = dt.datetime.now(dt.UTC)
    return row


async def _run(args: argparse.Namespace) -> int:
    try:
        async with transaction() as session:
            if args.command == "create":
                row, key = await create_key(session, args.name)
                print(f"Created API key {row.id} ({row.name}). It is shown only once:")
                print(key)
                return 0
            if args.command == "list":
                for row in await list_keys(session):
                    state = (
                        f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                    )
                    print(f"{row.id}\t{row.name}\t{row.created_at:%Y-%m-%d %H:%M}\t{state}")
                return 0
            revoked = await revoke_key(session, args.id)
            if revoked is None:
                print(f"No API key with id {args.id}", file=sys.stderr)
                return 1
            print(f"Revoked API key {revoked.id} ({revoked.name})")
            return 0
    finally:
        await dispose_engine()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.api_keys", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it once")
    create.add_argument("name", help="who uses the key, e.g. 1c")
    commands.add_parser("list", help="list keys (never the keys themselves)")
    revoke = commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", type=int)
    args = parser.parse_args(argv)
    if args.command == "create" and not args.name.strip():
        parser.error("the name must not be blank")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
