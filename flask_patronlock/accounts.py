"""Linked Patreon accounts: the link between a local user and a Patreon user, and that user's OAuth tokens.

One row of ``patronlock_accounts`` per linked local user. The tokens are encrypted at rest under
``PATRONLOCK_TOKEN_KEYS`` (:class:`~flask_patronlock.crypto.TokenCipher`) and never leave this module except as the
bearer string handed to the Patreon client: :class:`LinkedAccount` carries no token, and nothing here logs one.

* :meth:`Accounts.link` writes the row (encrypted tokens) and an audit row in one transaction.
* :meth:`Accounts.access_token` returns a usable access token, refreshing it when it is about to expire. Refresh
  tokens are single-use, so a refresh is serialized per account: the row is locked (``SELECT … FOR UPDATE`` on
  PostgreSQL; :meth:`Store.transaction <flask_patronlock.store.Store.transaction>` takes SQLite's write lock) and
  re-read, and if another worker rotated the pair meanwhile, its new token is used instead of spending the old
  refresh token a second time (:func:`~flask_patronlock.tokens.refresh_serialized`, which the creator's token uses
  too). ``invalid_grant`` marks the link as needing re-authorization and changes nothing else: no entitlement is
  touched.
* :meth:`Accounts.apply_identity` hands the membership to this campaign to
  :meth:`Store.apply <flask_patronlock.store.Store.apply>` (``source="oauth"``), the only writer of patron state.
* :meth:`Accounts.rotate_keys` re-encrypts every stored token under the first key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .errors import PatronLockError, TokenDecryptionError
from .extension import PatronLockState, get_state
from .patreon.errors import Unauthorized
from .patreon.types import Identity, MemberSnapshot, TokenSet, UserSnapshot
from .patron import Patron
from .tokens import REFRESH_MARGIN, StoredPair, interactive_client, refresh_serialized, reusable

__all__ = [
    "REFRESH_MARGIN",
    "AccountError",
    "Accounts",
    "AlreadyLinked",
    "LinkResult",
    "LinkedAccount",
    "NeedsReauthorization",
    "NotLinked",
    "RefreshTooSoon",
    "RotationReport",
    "get_accounts",
    "interactive_client",
]

log = logging.getLogger("flask_patronlock.accounts")


class AccountError(PatronLockError):
    """Base class of the linked-account errors."""


class AlreadyLinked(AccountError):
    """The Patreon account is already linked to another local user (it must be unlinked there first)."""

    def __init__(self, patreon_user_id: str, user_id: str) -> None:
        super().__init__(f"Patreon user {patreon_user_id} is already linked to another local user")
        self.patreon_user_id = patreon_user_id
        self.user_id = user_id


class NotLinked(AccountError):
    """The local user has no linked Patreon account."""


class NeedsReauthorization(AccountError):
    """Patreon no longer accepts this link's tokens (``invalid_grant``): the user must connect again."""


class RefreshTooSoon(AccountError):
    """The user refreshed their status too recently.

    :ivar retry_after: seconds until the next refresh is allowed.
    """

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"status refreshed too recently; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class LinkedAccount:
    """A linked account as stored, without its tokens."""

    id: int
    #: the local user's id (``user.get_id()``, as text).
    user_id: str
    patreon_user_id: str
    token_expires_at: datetime | None
    scope: str
    #: Patreon refused the refresh token: the user must connect again (entitlements are unchanged).
    needs_reauth: bool
    last_status_refresh_at: datetime | None
    created_at: datetime
    updated_at: datetime
    #: how the link was made: ``oauth`` (the Patreon account's owner consented on Patreon, by connecting or by
    #: Log in with Patreon) or ``email`` (a reconcile run matched an address the host vouched for: no consent, no
    #: tokens). Only an ``oauth`` link lets Log in with Patreon into the local account.
    origin: str = "oauth"

    @property
    def consented(self) -> bool:
        """Whether the Patreon account's owner made this link on Patreon's consent page (``origin == "oauth"``)."""
        return self.origin == "oauth"


@dataclass(frozen=True, slots=True)
class LinkResult:
    """What :meth:`Accounts.link` did."""

    account: LinkedAccount
    #: ``linked`` (a new link, or one a reconcile run made by email that the owner now consented to), ``relinked``
    #: (the user's link now points at another Patreon account) or ``reauthorized`` (the same link, with new tokens).
    outcome: str
    #: the Patreon user the local user was linked to before, when ``relinked``.
    replaced_patreon_user_id: str | None = None
    #: the local user who lost the Patreon account: a reconcile run had linked it to them by email, and its owner
    #: has now consented to this link instead.
    claimed_from_user_id: str | None = None

    @property
    def new_link(self) -> bool:
        """Whether the local user is now linked to a Patreon account they were not linked to before."""
        return self.outcome in ("linked", "relinked")


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What :meth:`Accounts.rotate_keys` re-encrypted."""

    accounts: int
    tokens: int


def _origin(row: Mapping[Any, Any]) -> str:
    """The row's origin; a row made before origins were recorded is ``oauth`` when it holds tokens (only an OAuth
    consent stores them) and ``email`` (a run's match) when it holds none."""
    origin = row["origin"]
    if origin is not None:
        return str(origin)
    return "oauth" if row["access_token"] is not None else "email"


def _account(row: Mapping[Any, Any]) -> LinkedAccount:
    return LinkedAccount(
        id=int(row["id"]),
        user_id=row["user_id"],
        patreon_user_id=row["patreon_user_id"],
        token_expires_at=row["token_expires_at"],
        scope=row["scope"] or "",
        needs_reauth=bool(row["needs_reauth"]),
        last_status_refresh_at=row["last_status_refresh_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        origin=_origin(row),
    )


class Accounts:
    """Linked accounts of one app. Get one with :func:`get_accounts` (or ``Accounts(get_state())``).

    Every method opens its own transaction; none needs a request context.
    """

    def __init__(self, state: PatronLockState) -> None:
        self.state = state
        self.store = state.store
        self.table = state.tables.accounts

    # -- reads --------------------------------------------------------------------------------------------------

    def get(self, user_id: str) -> LinkedAccount | None:
        """The link of local user ``user_id``."""
        with self.store.engine.connect() as conn:
            row = conn.execute(select(self.table).where(self.table.c.user_id == str(user_id))).mappings().first()
        return _account(row) if row else None

    def for_patreon_user(self, patreon_user_id: str) -> LinkedAccount | None:
        """The link of Patreon user ``patreon_user_id``."""
        with self.store.engine.connect() as conn:
            row = (
                conn.execute(select(self.table).where(self.table.c.patreon_user_id == patreon_user_id))
                .mappings()
                .first()
            )
        return _account(row) if row else None

    def _locked(self, conn: Connection, *where: Any) -> list[Mapping[Any, Any]]:
        stmt = select(self.table).where(*where).order_by(self.table.c.id)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        return list(conn.execute(stmt).mappings())

    # -- link / unlink ------------------------------------------------------------------------------------------

    def link(self, user_id: str, patreon_user: UserSnapshot, tokens: TokenSet) -> LinkResult:
        """Link local user ``user_id`` to ``patreon_user`` with these tokens (encrypted), and write an audit row.

        Call it only with the tokens of an OAuth consent the Patreon account's owner just gave: the link is recorded
        as ``origin="oauth"``, the kind Log in with Patreon accepts. A user already linked to this Patreon account
        gets the new tokens (and loses ``needs_reauth``; a link a run made by email becomes an ``oauth`` one); a user
        linked to another Patreon account is re-linked to this one. A link a reconcile run made by email from this
        Patreon account to *another* local user gives way (``claimed_from_user_id``): the account's owner has
        consented to this one.

        :raises AlreadyLinked: the Patreon account is linked to another local user with its owner's consent.
        """
        user_id = str(user_id)
        cipher = self.state.token_cipher()  # before the transaction: a missing key fails without writing anything
        values = {
            "patreon_user_id": patreon_user.id,
            "access_token": cipher.encrypt(tokens.access_token),
            "refresh_token": cipher.encrypt(tokens.refresh_token) if tokens.refresh_token else None,
            "token_expires_at": tokens.expires_at,
            "scope": " ".join(tokens.scope)[:255],
            "needs_reauth": False,
            "origin": "oauth",
        }
        detail = {"full_name": patreon_user.full_name, "email": patreon_user.email}
        for attempt in range(2):
            try:
                return self._link(user_id, patreon_user.id, values, detail)
            except IntegrityError:
                # Another worker inserted a row for this user or Patreon account after we looked (PostgreSQL:
                # unique constraint). Its row is committed now: look again, once.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _link(self, user_id: str, patreon_user_id: str, values: dict[str, Any], detail: dict[str, Any]) -> LinkResult:
        t = self.table
        now = self.store.clock()
        with self.store.transaction() as conn:
            rows = self._locked(conn, (t.c.user_id == user_id) | (t.c.patreon_user_id == patreon_user_id))
            by_patreon = next((r for r in rows if r["patreon_user_id"] == patreon_user_id), None)
            by_user = next((r for r in rows if r["user_id"] == user_id), None)
            claimed = None
            if by_patreon is not None and by_patreon["user_id"] != user_id:
                if _origin(by_patreon) == "oauth":
                    raise AlreadyLinked(patreon_user_id, by_patreon["user_id"])
                claimed = by_patreon["user_id"]
                conn.execute(delete(t).where(t.c.id == by_patreon["id"]))
                self._record_moved(conn, patreon_user_id, claimed, "claimed")
            replaced = None
            if by_user is None:
                conn.execute(insert(t).values(user_id=user_id, created_at=now, updated_at=now, **values))
                outcome = "linked"
            else:
                conn.execute(update(t).where(t.c.id == by_user["id"]).values(updated_at=now, **values))
                if by_user["patreon_user_id"] != patreon_user_id:
                    replaced = by_user["patreon_user_id"]
                    outcome = "relinked"
                    self._record_moved(conn, replaced, user_id, "relinked")
                elif _origin(by_user) != "oauth":
                    outcome = "linked"  # the run's email match, consented to now: the first link its owner made
                else:
                    outcome = "reauthorized"
            self.store.record_event(
                conn,
                "account_linked" if outcome != "reauthorized" else "account_reauthorized",
                source="oauth",
                patreon_user_id=patreon_user_id,
                user_id=user_id,
                detail=detail,
            )
            row = conn.execute(select(t).where(t.c.user_id == user_id)).mappings().one()
        return LinkResult(_account(row), outcome, replaced, claimed)

    def _record_moved(self, conn: Connection, patreon_user_id: str, user_id: str, reason: str) -> None:
        """The audit row of a link that a consent on Patreon moved: to another Patreon account (``relinked``), or
        away from the user a run had linked it to by e-mail (``claimed``)."""
        self.store.record_event(
            conn,
            "account_unlinked",
            source="oauth",
            patreon_user_id=patreon_user_id,
            user_id=user_id,
            detail={"reason": reason},
        )

    def unlink(self, user_id: str, *, reason: str = "user") -> LinkedAccount | None:
        """Remove local user ``user_id``'s link and tokens, with an audit row. The patron's stored state stays (it
        is the campaign's); the user simply stops being matched to it.

        :param reason: recorded on the audit row: ``user`` (they asked), ``user_missing`` (the local user is gone),
            or anything the host app chooses.
        :returns: the removed link, or ``None`` if there was none.
        """
        t = self.table
        with self.store.transaction() as conn:
            rows = self._locked(conn, t.c.user_id == str(user_id))
            if not rows:
                return None
            conn.execute(delete(t).where(t.c.id == rows[0]["id"]))
            self.store.record_event(
                conn,
                "account_unlinked",
                source="user" if reason == "user" else "oauth",
                patreon_user_id=rows[0]["patreon_user_id"],
                user_id=str(user_id),
                detail={"reason": reason},
            )
        return _account(rows[0])

    # -- tokens -------------------------------------------------------------------------------------------------

    def access_token(self, user_id: str, *, rejected: str | None = None) -> str:
        """A usable access token of ``user_id``'s link, refreshed first if it expires within
        :data:`~flask_patronlock.tokens.REFRESH_MARGIN`.

        :param rejected: a token Patreon just answered 401 to: refresh unless the stored token is already another.
        :raises NotLinked: no link.
        :raises NeedsReauthorization: the link needs re-authorization (now or from before).
        :raises TokenDecryptionError: the stored token cannot be decrypted with any configured key.
        :raises PatreonError: the refresh failed for another reason (nothing was changed; try again later).
        """
        t = self.table
        with self.store.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.user_id == str(user_id))).mappings().first()
        if row is None:
            raise NotLinked(f"local user {user_id} has no linked Patreon account")
        if row["needs_reauth"]:
            raise NeedsReauthorization("the Patreon link needs re-authorization")
        cipher = self.state.token_cipher()
        current = cipher.decrypt(row["access_token"]) if row["access_token"] is not None else None
        token = reusable(current, rejected=rejected, expires_at=row["token_expires_at"], now=self.store.clock())
        return token if token is not None else self._refresh(str(user_id), seen=current)

    def _refresh(self, user_id: str, *, seen: str | None) -> str:
        """Spend the refresh token, holding the account row's lock, unless another worker already did."""
        t = self.table
        cipher = self.state.token_cipher()
        locked: list[Mapping[Any, Any]] = []

        def lock(conn: Connection) -> StoredPair:
            rows = self._locked(conn, t.c.user_id == user_id)
            if not rows:
                raise NotLinked(f"local user {user_id} has no linked Patreon account")
            row = rows[0]
            if row["needs_reauth"]:
                raise NeedsReauthorization("the Patreon link needs re-authorization")
            locked.append(row)
            return StoredPair(
                cipher.decrypt(row["access_token"]) if row["access_token"] is not None else None,
                cipher.decrypt(row["refresh_token"]) if row["refresh_token"] is not None else None,
            )

        def save(conn: Connection, tokens: TokenSet) -> None:
            row = locked[0]
            conn.execute(
                update(t)
                .where(t.c.id == row["id"])
                .values(
                    access_token=cipher.encrypt(tokens.access_token),
                    # Patreon always rotates; if an answer ever lacks a new refresh token, keep the one we have
                    refresh_token=cipher.encrypt(tokens.refresh_token)
                    if tokens.refresh_token
                    else row["refresh_token"],
                    token_expires_at=tokens.expires_at,
                    scope=" ".join(tokens.scope)[:255] if tokens.scope else row["scope"],
                    updated_at=self.store.clock(),
                )
            )

        def fail(conn: Connection, why: str) -> Exception:
            self._mark_needs_reauth(conn, locked[0], why=why)
            if why == "invalid_grant":
                return NeedsReauthorization("Patreon refused the refresh token (invalid_grant)")
            return NeedsReauthorization("no refresh token is stored for this link")

        return refresh_serialized(
            self.state, seen=seen, purpose="refreshing a patron's Patreon token", lock=lock, save=save, fail=fail
        )

    def _mark_needs_reauth(self, conn: Connection, row: Mapping[Any, Any], *, why: str) -> None:
        t = self.table
        conn.execute(update(t).where(t.c.id == row["id"]).values(needs_reauth=True, updated_at=self.store.clock()))
        self.store.record_event(
            conn,
            "account_needs_reauth",
            source="oauth",
            patreon_user_id=row["patreon_user_id"],
            user_id=row["user_id"],
            detail={"reason": why},
        )
        log.info("Patreon link of local user %s needs re-authorization (%s)", row["user_id"], why)

    def mark_needs_reauth(self, user_id: str, *, why: str) -> None:
        """Flag ``user_id``'s link as needing re-authorization (with an audit row); entitlements are unchanged."""
        with self.store.transaction() as conn:
            rows = self._locked(conn, self.table.c.user_id == str(user_id))
            if rows and not rows[0]["needs_reauth"]:
                self._mark_needs_reauth(conn, rows[0], why=why)

    def identity(self, user_id: str) -> Identity:
        """``/identity`` as ``user_id``'s Patreon account, with the membership to this campaign only.

        A 401 refreshes the token once and retries; a second 401 marks the link as needing re-authorization.

        :raises NotLinked, NeedsReauthorization: see :meth:`access_token`.
        :raises PatreonError: Patreon is down, slow, rate limiting, or answered something unusable.
        """
        campaign_id = self.state.campaign_id()
        token = self.access_token(user_id)
        client = interactive_client(self.state, "reading a patron's Patreon status")
        try:
            try:
                return client.identity(campaign_id=campaign_id, access_token=token)
            except Unauthorized:
                token = self.access_token(user_id, rejected=token)
            try:
                return client.identity(campaign_id=campaign_id, access_token=token)
            except Unauthorized:
                self.mark_needs_reauth(user_id, why="unauthorized")
                raise NeedsReauthorization("Patreon refused a freshly refreshed token") from None
        finally:
            client.close()

    # -- status -------------------------------------------------------------------------------------------------

    def claim_status_refresh(self, user_id: str, *, interval: float) -> datetime | None:
        """Record that ``user_id`` refreshes their status now, unless they did within ``interval`` seconds.

        Kept in the account row (``last_status_refresh_at``), so the limit holds across workers.

        :returns: the previous refresh time, for :meth:`release_status_refresh`.
        :raises NotLinked: no link.
        :raises RefreshTooSoon: with the seconds left.
        """
        t = self.table
        now = self.store.clock()
        with self.store.transaction() as conn:
            rows = self._locked(conn, t.c.user_id == str(user_id))
            if not rows:
                raise NotLinked(f"local user {user_id} has no linked Patreon account")
            last = rows[0]["last_status_refresh_at"]
            if last is not None:
                wait = interval - (now - last).total_seconds()
                if wait > 0:
                    raise RefreshTooSoon(wait)
            conn.execute(update(t).where(t.c.id == rows[0]["id"]).values(last_status_refresh_at=now))
        return last

    def release_status_refresh(self, user_id: str, previous: datetime | None) -> None:
        """Undo :meth:`claim_status_refresh` after a refresh that Patreon could not answer (an outage should not
        cost the user their next try)."""
        t = self.table
        with self.store.transaction() as conn:
            conn.execute(update(t).where(t.c.user_id == str(user_id)).values(last_status_refresh_at=previous))

    def apply_identity(
        self, identity: Identity, *, observed_at: datetime
    ) -> tuple[MemberSnapshot | None, Patron | None]:
        """Store what ``identity`` says about its user's membership to this campaign, through
        :meth:`Store.apply <flask_patronlock.store.Store.apply>` with ``source="oauth"``.

        :returns: the membership (``None`` when the user is not a member of this campaign) and the stored patron
            after the write (``None`` when nothing is stored for them).
        """
        campaign_id = self.state.campaign_id()
        member = identity.membership_for(campaign_id)
        if member is None:
            stored = None
        else:
            if member.user_id is None:
                member = member.replace(user_id=identity.user.id)
            result = self.store.apply(member, source="oauth", observed_at=observed_at)
            stored = result.patron
        return member, stored

    def last_link_detail(self, user_id: str) -> dict[str, Any]:
        """The name and email of the Patreon account as recorded when it was last linked (for the status page)."""
        e = self.state.tables.events
        with self.store.engine.connect() as conn:
            detail = conn.execute(
                select(e.c.detail)
                .where(e.c.user_id == str(user_id), e.c.kind.in_(("account_linked", "account_reauthorized")))
                .order_by(e.c.id.desc())
                .limit(1)
            ).scalar()
        return dict(detail) if isinstance(detail, dict) else {}

    # -- keys ---------------------------------------------------------------------------------------------------

    def rotate_keys(self) -> RotationReport:
        """Re-encrypt every stored token under the first key of ``PATRONLOCK_TOKEN_KEYS``, in one transaction.

        :raises TokenDecryptionError: some token opens with none of the keys; it names the accounts, and nothing
            is changed.
        """
        t = self.table
        cipher = self.state.token_cipher()
        accounts = tokens = 0
        with self.store.transaction() as conn:
            rows = self._locked(conn)
            failed: list[int] = []
            changes: list[tuple[int, dict[str, bytes]]] = []
            for row in rows:
                values: dict[str, bytes] = {}
                for column in ("access_token", "refresh_token"):
                    if row[column] is None:
                        continue
                    try:
                        values[column] = cipher.rotate(row[column])
                    except TokenDecryptionError:
                        failed.append(int(row["id"]))
                        break
                if values:
                    changes.append((int(row["id"]), values))
            if failed:
                ids = ", ".join(str(i) for i in sorted(set(failed)))
                raise TokenDecryptionError(
                    f"the tokens of linked account(s) {ids} (patronlock_accounts.id) open with none of the keys in "
                    "PATRONLOCK_TOKEN_KEYS, so nothing was re-encrypted. Put back the key they were encrypted with "
                    "(anywhere in the list) and run this again, or unlink those accounts (their users connect again)."
                )
            for account_id, values in changes:
                conn.execute(update(t).where(t.c.id == account_id).values(**values))
                accounts += 1
                tokens += len(values)
        return RotationReport(accounts=accounts, tokens=tokens)


def get_accounts(state: PatronLockState | None = None) -> Accounts:
    """The :class:`Accounts` of ``state`` (default: the current app's)."""
    return Accounts(state if state is not None else get_state())
