"""flask-patronlock's signals, on its own :class:`blinker.Namespace`.

**Actions** tell receivers that something happened; they are sent only after the database transaction that made it
true has committed, with the real application object as sender (never the ``current_app`` proxy). A receiver's
exception is logged with the receiver's name and never breaks the page view, sync run or webhook that sent it; set
``PATRONLOCK_STRICT_SIGNALS = True`` (as tests should) to re-raise instead.

Every action below lists its keyword arguments. ``patron`` is always a :class:`flask_patronlock.patron.Patron` (the
state after the change), ``previous`` the state before (``None`` when the patron is new), ``source`` one of
``oauth``, ``webhook``, ``sync``, ``admin``, and ``run_id`` the sync run (or ``None``).
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import Namespace, Signal

log = logging.getLogger("flask_patronlock.signals")

patronlock_signals = Namespace()

#: A patron's stored state changed (any change at all). Sent once per changed patron, after commit.
#: kwargs: ``patron``, ``previous``, ``changes`` (dict of field -> (old, new)), ``events`` (tuple of the
#: inferred event names below), ``source``, ``run_id``.
patron_changed: Signal = patronlock_signals.signal("patron-changed")

#: A member started pledging (new paying member, or a former/follower became an active patron).
#: kwargs: ``patron``, ``previous``, ``source``, ``run_id``.
pledge_started: Signal = patronlock_signals.signal("pledge-started")

#: The entitled amount or tiers changed while pledging. kwargs: ``patron``, ``previous``, ``source``, ``run_id``,
#: ``direction`` (``"up"``, ``"down"`` or ``"same"`` when only the tiers changed at equal cents).
tier_changed: Signal = patronlock_signals.signal("tier-changed")

#: Patreon charged the patron successfully (``last_charge_date`` advanced with status ``Paid``).
#: kwargs: ``patron``, ``previous``, ``source``, ``run_id``, ``charged_at``.
charge_succeeded: Signal = patronlock_signals.signal("charge-succeeded")

#: A payment was declined (status became ``declined_patron`` or the last charge ``Declined``).
#: kwargs: ``patron``, ``previous``, ``source``, ``run_id``.
payment_declined: Signal = patronlock_signals.signal("payment-declined")

#: A declined payment was fixed: from declined to paid. kwargs: ``patron``, ``previous``, ``source``, ``run_id``.
payment_recovered: Signal = patronlock_signals.signal("payment-recovered")

#: The pledge ended (status became ``former_patron``). kwargs: ``patron``, ``previous``, ``source``, ``run_id``.
pledge_cancelled: Signal = patronlock_signals.signal("pledge-cancelled")

#: Names of the inferred events, in the order they are sent for one change.
EVENT_SIGNALS: dict[str, Signal] = {
    "pledge_started": pledge_started,
    "tier_changed": tier_changed,
    "charge_succeeded": charge_succeeded,
    "payment_declined": payment_declined,
    "payment_recovered": payment_recovered,
    "pledge_cancelled": pledge_cancelled,
}


# -- connect / log in with Patreon (sent by flask_patronlock.views, after the link is committed) ----------------------
#
# ``user`` is the host app's user object (a Flask-Login user), ``user_id`` its id as text (``user.get_id()``),
# ``patreon_user`` a :class:`flask_patronlock.patreon.types.UserSnapshot`, and ``patron`` the stored
# :class:`~flask_patronlock.patron.Patron` after the identity was applied (``None`` when the Patreon account is not a
# member of this campaign).

#: A local user was linked to a Patreon account (a new link, or a link moved to another Patreon account; not a
#: re-authorization of the same one). kwargs: ``user``, ``user_id``, ``patreon_user``, ``patron``, ``via``
#: (``"connect"``: a logged-in user connected; ``"login"``: Log in with Patreon created the user;
#: ``"email"``: Log in with Patreon linked the user with the same verified email, when allowed).
patron_linked: Signal = patronlock_signals.signal("patron-linked")

#: A local user's link to a Patreon account was removed. kwargs: ``user_id``, ``patreon_user_id``, ``reason``
#: (``"user"``: they unlinked; ``"relinked"``: they connected another Patreon account; ``"user_missing"``: the local
#: user no longer exists; ``"claimed"``: a reconcile run had linked it by e-mail, and the Patreon account's owner
#: connected it to another local user).
patron_unlinked: Signal = patronlock_signals.signal("patron-unlinked")

#: A visitor logged in with Patreon (after the session was renewed). kwargs: ``user``, ``user_id``,
#: ``patreon_user``, ``patron``.
patron_logged_in: Signal = patronlock_signals.signal("patron-logged-in")

#: Log in with Patreon created a local user through the ``@patronlock.user_creator`` callback (sent before
#: ``patron-linked`` and ``patron-logged-in``). kwargs: ``user``, ``user_id``, ``patreon_user``.
user_created_from_patreon: Signal = patronlock_signals.signal("user-created-from-patreon")


# -- reconcile runs and webhooks (issue 5) ----------------------------------------------------------------------------

#: The patron's entitlement became ``active`` or ``grace`` (:attr:`Patron.access` flipped to true), from any source:
#: a snapshot, a decision on a held run, or time (sent once per flip). kwargs: ``patron``, ``previous``, ``source``,
#: ``run_id``.
access_granted: Signal = patronlock_signals.signal("access-granted")

#: The patron's entitlement ended (:attr:`Patron.access` flipped to false): cancelled past the paid period, declined
#: past grace, missing from complete runs past the limit ... Sent once per flip. kwargs: ``patron``, ``previous``,
#: ``source``, ``run_id``.
access_revoked: Signal = patronlock_signals.signal("access-revoked")

EVENT_SIGNALS.update({"access_granted": access_granted, "access_revoked": access_revoked})

#: A complete sync run would have taken something away from more patrons than the breaker allows (access, all their
#: entitled tiers or all their entitled cents), so those changes wait for the creator's approval (``flask patronlock
#: sync approve RUN`` / ``reject RUN``). Sent after the hold is committed (and logged at WARNING).
#: kwargs: ``run_id``, ``revoking`` (how many patrons would lose something or start losing access), ``total``
#: (entitled patrons before the run), ``member_ids`` (tuple of the held members), ``reason`` (the run's reason: what
#: changed, on which pages, e.g. "tiers emptied for 2,632 patron(s) on pages 1-30: ..."), ``losses`` (dict of kind
#: -> patrons: ``access``, ``tiers``, ``cents``, ``missing``).
revocations_held: Signal = patronlock_signals.signal("revocations-held")

#: A sync run started: its row (status ``running``) is committed and it holds the lease. kwargs: ``run_id``,
#: ``trigger`` (``manual``, ``cron``, ``schedule``, ``celery`` ...), ``started_at``.
sync_started: Signal = patronlock_signals.signal("sync-started")

#: A sync run finished (complete, incomplete, held or failed). Sent after its row is final.
#: kwargs: ``run`` (a :class:`flask_patronlock.sync.RunResult`).
sync_finished: Signal = patronlock_signals.signal("sync-finished")

#: Runs keep ending incomplete (or failed): sent once, after the ``sync-finished`` of the run that made
#: ``PATRONLOCK_SYNC_ALERT_AFTER`` incomplete runs in a row, so a receiver can tell the creator that nobody who left
#: loses access until a run completes again (each later run of the streak logs a WARNING instead). kwargs: ``run``
#: (the :class:`flask_patronlock.sync.RunResult` that made the streak), ``streak`` (how many in a row),
#: ``last_complete`` (the latest complete run's :class:`~flask_patronlock.sync.RunResult`, or ``None``).
sync_incomplete: Signal = patronlock_signals.signal("sync-incomplete")

#: A signed webhook was received and stored (a duplicate delivery -- the same body, under any event -- is not sent
#: again). Sent after the delivery row is committed, before the answer to Patreon; the work happens later
#: (``webhook-processed``). kwargs: ``delivery_id``, ``event`` (``X-Patreon-Event``), ``member_id``.
webhook_received: Signal = patronlock_signals.signal("webhook-received")

#: A webhook delivery was processed (applied, ignored or given up). kwargs: ``delivery_id``, ``event``, ``member_id``,
#: ``outcome`` (``applied`` — re-fetched from the API or from the payload — ``ignored``, ``failed``), ``result``
#: (the :class:`flask_patronlock.transitions.ApplyResult`, or ``None``).
webhook_processed: Signal = patronlock_signals.signal("webhook-processed")

# -- the creator's token ---------------------------------------------------------------------------------------------

#: Patreon stopped accepting the creator's token: a refresh was refused (``invalid_grant``), or a 401 came with no
#: refresh token to renew it. Runs stop being complete (so they revoke nobody) and webhook deliveries wait for a
#: working token until the creator connects again. Sent once, after the degraded state is committed.
#: kwargs: ``reason`` (``"invalid_grant"`` or ``"no_refresh_token"``), ``failed_at`` (a datetime), ``origin``
#: (``"connect"``: the settings page's connection; ``"config"``: the ``PATRONLOCK_CREATOR_*_TOKEN`` pair).
creator_token_failed: Signal = patronlock_signals.signal("creator-token-failed")


def _receiver_name(receiver: Any) -> str:
    module = getattr(receiver, "__module__", None) or "?"
    name = getattr(receiver, "__qualname__", None) or repr(receiver)
    return f"{module}.{name}"


def send_action(signal: Signal, sender: Any, *, strict: bool = False, **kwargs: Any) -> None:
    """Send an action to every receiver, isolating each: one failing receiver neither stops the others nor the caller.

    With ``strict`` the first exception is re-raised (the remaining receivers are not called).
    """
    if not signal.receivers:
        return
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, **kwargs)
        except Exception:
            if strict:
                raise
            log.exception(
                "signal %r: receiver %s failed; ignored", getattr(signal, "name", signal), _receiver_name(receiver)
            )


# -- filters ---------------------------------------------------------------------------------------------------------
#
# A filter is a signal whose receivers may change a value. Receivers are called in ascending ``priority`` (default
# 50; lower runs first), and in connection order among equal priorities. Each receives the current value as
# ``value=`` plus the filter's keyword arguments, and returns the new value, or ``None`` to leave it unchanged. The
# value a receiver returns is what the next receiver gets. A receiver that raises is logged and skipped (its change is
# dropped) unless strict.

DEFAULT_PRIORITY = 50


def filter_receiver(signal: Signal, *, priority: int = DEFAULT_PRIORITY, sender: Any = None) -> Any:
    """Decorator connecting a filter receiver with a priority::

        @filter_receiver(signals.access_decision, priority=10)
        def vip(sender, value, **kw):
            ...

    ``sender=None`` listens to every app. The receiver is held strongly (decorated functions stay connected).
    """

    def decorator(func: Any) -> Any:
        func.patronlock_priority = priority
        if sender is None:
            signal.connect(func, weak=False)
        else:
            signal.connect(func, sender=sender, weak=False)
        return func

    return decorator


def apply_filter(signal: Signal, sender: Any, value: Any, *, strict: bool = False, **kwargs: Any) -> Any:
    """Fold ``value`` through the filter's receivers (see the module notes on order and ``None``)."""
    if not signal.receivers:
        return value
    receivers = sorted(
        signal.receivers_for(sender), key=lambda r: getattr(r, "patronlock_priority", DEFAULT_PRIORITY)
    )  # sorted() is stable: connection order among equal priorities
    for receiver in receivers:
        try:
            result = receiver(sender, value=value, **kwargs)
        except Exception:
            if strict:
                raise
            log.exception(
                "filter %r: receiver %s failed; its change is ignored",
                getattr(signal, "name", signal),
                _receiver_name(receiver),
            )
            continue
        if result is not None:
            value = result
    return value


# -- filters of locks and banners (issue 4) --------------------------------------------------------------------------

#: Filter: the :class:`~flask_patronlock.policy.Decision` for one lock and one viewer. Folded after
#: :func:`~flask_patronlock.policy.decide` and before the decision is used (by ``@locked``, ``can_view``, the template
#: tag, ``send_locked_file`` and the explainer, which shows each change). Receivers run in ascending ``priority``,
#: then in connection order; each gets the current decision as ``value`` and returns a new Decision or ``None`` to
#: leave it unchanged; the last receiver's decision is final.
#: kwargs: ``value``, ``lock`` (the lock name, or ``None`` for a one-off rule), ``rule`` (the effective
#: :class:`~flask_patronlock.policy.LockRule`), ``viewer`` (:class:`~flask_patronlock.policy.Viewer`), ``user``
#: (the host's user object, or ``None``), ``now``.
access_decision: Signal = patronlock_signals.signal("access-decision")

#: Filter: the context a banner template is rendered with (a dict; see :doc:`banners`). Same fold order as
#: :data:`access_decision`; return a dict (or ``None`` to keep it). kwargs: ``value``, ``lock``, ``decision``.
banner_context: Signal = patronlock_signals.signal("banner-context")

#: Filter: the absolute Patreon link a banner's pledge / upgrade / rejoin button points at (a string). Same fold order.
#: kwargs: ``value``, ``tier`` (:class:`~flask_patronlock.patreon.types.TierSnapshot` or ``None``), ``cents`` (the
#: amount asked for, or ``None``), ``lock``, ``decision``.
pledge_url: Signal = patronlock_signals.signal("pledge-url")


# -- filters of banner HTML and lock rules, for add-ons (issue 6) ------------------------------------------------------

#: Filter: the HTML of a rendered banner (a :class:`markupsafe.Markup`), wherever one is shown: the ``{% patronlock %}``
#: tag, ``patronlock_banner()``, :func:`~flask_patronlock.banners.render_banner` and the locked page of a
#: :class:`~flask_patronlock.locks.LockedError`. Folded once per banner rendered, after its template was rendered
#: with the (filtered) banner context. Same fold order as :data:`access_decision`; return the new HTML, or ``None``
#: to keep it. Return :class:`~markupsafe.Markup` for HTML: a plain ``str`` is escaped, like any string in a template.
#: kwargs: ``value``, ``lock`` (the lock name, or ``None`` for a one-off rule), ``decision``
#: (:class:`~flask_patronlock.policy.Decision`), ``context`` (the banner context dict the template got).
banner_html: Signal = patronlock_signals.signal("banner-html")

#: Filter: the :class:`~flask_patronlock.policy.LockRule` in force for a lock, before anything is decided with it
#: (decisions, banners, the explainer and the settings page all see the filtered rule). Folded once per lock and
#: settings version, then cached: again only after a setting changes (an override, an add-on switched on or off ...)
#: or a ``lock-rule`` receiver is connected or disconnected. So a receiver must depend only on its arguments; for
#: anything that depends on the viewer or the time, use :data:`access_decision`. Same fold order as
#: :data:`access_decision`; return a LockRule (tier titles are resolved to ids, as in a declared rule) or ``None``
#: to keep it. kwargs: ``value`` (the rule, tier titles already resolved to ids), ``lock`` (the lock name, or
#: ``None`` for a one-off rule), ``source`` (``"default"``: declared in code; ``"override"``: the creator's;
#: ``"one-off"``).
lock_rule: Signal = patronlock_signals.signal("lock-rule")
