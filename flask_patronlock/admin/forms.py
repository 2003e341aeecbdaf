"""The settings page's forms (Flask-WTF, CSRF-protected).

Each form only turns what the creator typed into the values of the real validators -- :meth:`LockRule.from_dict
<flask_patronlock.policy.LockRule.from_dict>`, :meth:`PolicySettings.from_dict
<flask_patronlock.policy.PolicySettings.from_dict>`, :func:`flask_patronlock.banners.check_text`,
:meth:`Routing.from_dict <flask_patronlock.settings.Routing>` -- and shows their :class:`ValueError` next to the field
it names. A form that does not validate is shown again with what was typed: nothing is lost, nothing is saved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    Field,
    FieldList,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import NumberRange, Optional, ValidationError

from .. import formatting
from ..i18n import format_args, gettext, lazy_gettext
from ..paths import normalize_prefix, url_key
from ..patreon.jsonapi import INT32
from ..patreon.types import TierSnapshot
from ..policy import LockRule, PolicySettings

__all__ = [
    "BannerForm",
    "CompForm",
    "LockDetailsForm",
    "LockForm",
    "NewLockForm",
    "PolicyForm",
    "RoutingForm",
    "attach_error",
    "cents_from_text",
]

try:  # wtforms 3.3 deprecates (value, label) tuples for SelectChoice; older versions only know tuples
    from wtforms import SelectChoice as _SelectChoice
except ImportError:  # pragma: no cover - wtforms < 3.3
    _SelectChoice = None


def choice(value: str, label: str) -> Any:
    """One option of a select or radio field, in the form the installed wtforms prefers."""
    return _SelectChoice(value, label) if _SelectChoice is not None else (value, label)


def choices(pairs: Iterable[tuple[str, str]]) -> list[Any]:
    """:func:`choice` for each ``(value, label)``."""
    return [choice(value, label) for value, label in pairs]


_AMOUNT = re.compile(r"^\s*[^\d\s.,-]{0,3}\s*(\d{1,7})(?:[.,](\d{1,2}))?\s*$")


def cents_from_text(text: str | None) -> int | None:
    """``"5"``, ``"5.00"``, ``"$5,5"`` -> cents; empty -> ``None``.

    :raises ValueError: anything else (negative amounts, letters, more than two decimals).
    """
    if text is None or not text.strip():
        return None
    match = _AMOUNT.match(text)
    if match is None:
        raise ValueError(gettext("%(text)s is not an amount: write it like 5 or 5.00", text=repr(text.strip())))
    whole, frac = match.group(1), match.group(2) or "0"
    return int(whole) * 100 + int(frac.ljust(2, "0"))


def _amount(cents: int, symbol: str = "") -> str:
    """``cents`` as the form's choices show it: ``10.00`` (or ``$10.00`` with ``symbol``) in English with US dollars
    as always, else in the site's locale and currency (``10,00 $`` in German)."""
    site_locale, currency = format_args()
    return formatting.money(cents, symbol, locale=site_locale, currency=currency)



def _in_range(low: int, high: int | None = None) -> NumberRange:
    """WTForms' range check with its message in the site's language, from flask-patronlock's catalogue (WTForms'
    own message would be translated by WTForms' catalogue, or not at all for a language it lacks)."""
    if high is None:
        return NumberRange(min=low, message=lazy_gettext("Number must be at least %(min)s."))
    return NumberRange(min=low, max=high, message=lazy_gettext("Number must be between %(min)s and %(max)s."))

class WholeNumberField(IntegerField):
    """An ``IntegerField`` that refuses a number no ``INTEGER`` column holds before any validator sees it
    (``NumberRange`` compares through ``float``, which overflows on a 400-digit number)."""

    data: int | None

    def process_formdata(self, valuelist: list[Any]) -> None:
        super().process_formdata(valuelist)
        if self.data is not None and not INT32[0] <= self.data <= INT32[1]:
            self.data = None
            raise ValueError(gettext("That number is far too large."))


class AmountField(StringField):
    """An amount of money typed in the currency's units; ``.cents`` holds the parsed value after validation."""

    cents: int | None = None

    def pre_validate(self, form: Any) -> None:
        try:
            self.cents = cents_from_text(self.data)
        except ValueError as exc:
            self.cents = None
            raise ValidationError(str(exc)) from None


def attach_error(form: FlaskForm, message: str, fields: Mapping[str, str]) -> None:
    """Show a validator's ``message`` next to the field whose key it names (``LockRule.min_cents must be ...``),
    else on the form as a whole (``form.form_errors``)."""
    for key, field_name in fields.items():
        if re.search(rf"\b{re.escape(key)}\b", message):
            field: Field = getattr(form, field_name)
            field.errors = [*list(field.errors or []), message]
            return
    form.form_errors.append(message)


# -- locks ------------------------------------------------------------------------------------------------------------


class LockForm(FlaskForm):
    """One named lock's rule."""

    enabled = BooleanField(lazy_gettext("On (off: everyone may see what this lock guards)"))
    tiers = SelectMultipleField(lazy_gettext("Tiers"), choices=[], validate_choice=False)
    tier_match = RadioField(
        lazy_gettext("Which patrons of these tiers"),
        choices=choices(
            [
                ("or_higher", lazy_gettext("A ticked tier, or any tier that costs at least as much")),
                (
                    "exact",
                    lazy_gettext("Only the ticked tiers (a patron of another tier does not pass, whatever it costs)"),
                ),
            ]
        ),
        default="or_higher",
    )
    min_amount = AmountField(lazy_gettext("…or at least this much a month"))
    lifetime_amount = AmountField(lazy_gettext("Lifetime support of at least"))
    patron_since_before = DateField(lazy_gettext("Patrons since before"), validators=[Optional()])
    drip_months = WholeNumberField(
        lazy_gettext("Opens after this many months of pledging"), validators=[Optional(), _in_range(0, 1200)]
    )
    free_members = BooleanField(lazy_gettext("Free members too (members of your Patreon with no paid pledge)"))
    patrons_at_publish = BooleanField(
        lazy_gettext("Only those who were patrons when the item was published")
    )
    public_after = DateField(lazy_gettext("Early access: open to everyone on"), validators=[Optional()])
    combine = RadioField(
        lazy_gettext("Combine the conditions"),
        choices=choices(
            [("all", lazy_gettext("All conditions must hold")), ("any", lazy_gettext("Any one condition is enough"))]
        ),
        default="all",
    )

    #: ValueError key -> field, to show a rule's validation error where it belongs.
    ERROR_FIELDS = {
        "min_cents": "min_amount",
        "tier_ids": "tiers",
        "tier_match": "tier_match",
        "lifetime_cents": "lifetime_amount",
        "patron_since_before": "patron_since_before",
        "drip_months": "drip_months",
        "public_after": "public_after",
        "patrons_at_publish": "patrons_at_publish",
        "free_members": "free_members",
        "combine": "combine",
        "enabled": "enabled",
    }

    def set_tier_choices(self, tiers: Iterable[TierSnapshot], keep: Sequence[str] = ()) -> None:
        """Offer the campaign's real tiers (cheapest first), plus any tier the rule names that is not (or no longer)
        among them, so saving the form never drops it silently."""
        pairs = [
            (t.id, gettext("%(tier)s (%(amount)s a month)", tier=t.title or t.id, amount=_amount(t.amount_cents)))
            for t in tiers
        ]
        known = {value for value, _ in pairs}
        for ref in keep:
            if ref not in known:
                pairs.append((ref, gettext("%(tier)s (not a tier of the campaign)", tier=ref)))
                known.add(ref)
        self.tiers.choices = choices(pairs)

    def fill_from(self, rule: LockRule) -> None:
        """Show ``rule`` in the form (a GET)."""
        self.enabled.data = rule.enabled
        self.tiers.data = list(rule.tier_ids)
        self.tier_match.data = rule.tier_match
        self.min_amount.data = formatting.money(rule.min_cents)
        self.lifetime_amount.data = formatting.money(rule.lifetime_cents)
        self.patron_since_before.data = rule.patron_since_before.date() if rule.patron_since_before else None
        self.drip_months.data = rule.drip_months
        self.public_after.data = rule.public_after.date() if rule.public_after else None
        self.patrons_at_publish.data = rule.patrons_at_publish
        self.free_members.data = rule.free_members
        self.combine.data = rule.combine

    def rule(self) -> LockRule | None:
        """The rule typed in, validated by :meth:`LockRule.from_dict`; ``None`` (and errors on the form) if not."""
        if not self.validate():
            return None
        since: date | None = self.patron_since_before.data
        public: date | None = self.public_after.data
        try:
            return LockRule.from_dict(
                {
                    "enabled": bool(self.enabled.data),
                    "tier_ids": [t for t in (self.tiers.data or []) if t],
                    "tier_match": self.tier_match.data or "or_higher",
                    "min_cents": self.min_amount.cents,
                    "lifetime_cents": self.lifetime_amount.cents,
                    "patron_since_before": since.isoformat() if since else None,
                    "drip_months": self.drip_months.data,
                    "public_after": public.isoformat() if public else None,
                    "patrons_at_publish": bool(self.patrons_at_publish.data),
                    "free_members": bool(self.free_members.data),
                    "combine": self.combine.data or "all",
                }
            )
        except (ValueError, TypeError) as exc:
            attach_error(self, str(exc), self.ERROR_FIELDS)
            return None


class LockDetailsForm(FlaskForm):
    """The title and description of a lock a creator made (its name never changes)."""

    title = StringField(lazy_gettext("Name patrons read"), render_kw={"maxlength": 100})
    description = TextAreaField(lazy_gettext("What it is for (optional)"), render_kw={"maxlength": 500, "rows": 2})

    def show_errors(self, errors: Iterable[tuple[str, str]]) -> None:
        """Put each ``(field, message)`` of a :class:`~flask_patronlock.settings.LockError` next to its field (on the
        form as a whole when the form has no such field)."""
        for field_name, message in errors:
            field = getattr(self, field_name, None)
            if isinstance(field, Field):
                field.errors = [*list(field.errors or []), message]
            else:
                self.form_errors.append(message)


class NewLockForm(LockDetailsForm):
    """A new lock: what patrons read, and the short name code, templates and content use."""

    name = StringField(
        lazy_gettext("Short name (optional)"),
        # an example short name: lowercase letters, digits and hyphens only
        render_kw={"maxlength": 100, "placeholder": lazy_gettext("early-access")},
    )


class PathLockForm(Form):
    """One row of the URL-prefix locks (no CSRF of its own: it lives inside :class:`RoutingForm`)."""

    prefix = StringField(lazy_gettext("URL starts with"))
    lock = SelectField(lazy_gettext("Lock"), choices=[], validate_choice=False)


class RoutingForm(FlaskForm):
    """The site-wide lock and the URL-prefix locks."""

    site_lock = SelectField(lazy_gettext("Site-wide lock"), choices=[], validate_choice=False)
    paths = FieldList(FormField(PathLockForm), min_entries=0)

    def set_lock_choices(self, names: Iterable[str]) -> None:
        """Offer the declared locks."""
        options = [(name, name) for name in names]
        self.site_lock.choices = choices([("", gettext("None: the whole site is open")), *options])
        for entry in self.paths:
            entry.form.lock.choices = choices([("", gettext("(none: remove this row)")), *options])

    def routing(self, declared: Iterable[str]) -> dict[str, Any] | None:
        """``{"site_lock": ..., "path_locks": {...}}``, or ``None`` with errors on the form."""
        if not self.validate():
            return None
        known = set(declared)
        ok = True
        site = self.site_lock.data or None
        if site is not None and site not in known:
            self.site_lock.errors = [gettext("No lock named %(name)s is declared.", name=repr(site))]
            ok = False
        paths: dict[str, str] = {}
        first_of: dict[str, str] = {}  # what makes two prefixes the same URL -> the first one written
        for entry in self.paths:
            typed = (entry.form.prefix.data or "").strip()
            name = entry.form.lock.data or ""
            if not typed and not name:
                continue
            prefix, problem = _url_prefix(typed)
            if problem:
                entry.form.prefix.errors = [problem]
                ok = False
            elif not name:
                entry.form.lock.errors = [gettext("Choose the lock for this URL (or clear the URL to remove the row).")]
                ok = False
            elif name not in known:
                entry.form.lock.errors = [gettext("No lock named %(name)s is declared.", name=repr(name))]
                ok = False
            elif url_key(prefix) in first_of:
                first = first_of[url_key(prefix)]
                same = gettext("This is the same URL as %(url)s above: keep one of the two.", url=first)
                entry.form.prefix.errors = [same]
                ok = False
            else:
                first_of[url_key(prefix)] = typed
                paths[prefix] = name
        return {"site_lock": site, "path_locks": paths} if ok else None


def _url_prefix(typed: str) -> tuple[str, str | None]:
    """A URL prefix as the creator typed it -> ``(its stored spelling, None)`` or ``("", what is wrong)``."""
    if "?" in typed:
        return "", gettext("Write the path only, without the part from ? on: a URL lock never reads the query.")
    if "#" in typed:
        return "", gettext("Write the path only, without the part from # on: a URL lock never reads the anchor.")
    if not typed.startswith("/"):
        return "", gettext("Write a URL path that starts with /, like /members")
    try:
        return normalize_prefix(typed), None
    except ValueError:
        return "", gettext("Write the URL without spaces (a space in an address is written %(space)s).", space="%20")


# -- banners ----------------------------------------------------------------------------------------------------------


class BannerForm(FlaskForm):
    """One reason's banner text."""

    text = TextAreaField(lazy_gettext("Text"))
    #: the lock the page is about: its preview, and the lock of the "only this lock" scope.
    lock = HiddenField()
    #: "all" (the site-wide text, the default when absent) or "lock" (a text of the lock's own).
    scope = RadioField(lazy_gettext("Show this text on"), choices=[], validate_choice=False, default="all")


# -- policies ---------------------------------------------------------------------------------------------------------


class PolicyForm(FlaskForm):
    """The creator's access policies (:class:`~flask_patronlock.policy.PolicySettings`)."""

    declined = RadioField(
        lazy_gettext("When a payment is declined"),
        choices=choices([
            ("restrict", lazy_gettext("Lock patron content at once")),
            ("grace", lazy_gettext("Keep access for a grace period")),
            ("retry_window", lazy_gettext("Keep access while Patreon retries the payment (to the end of that month)")),
        ]),
    )
    declined_grace_days = WholeNumberField(
        lazy_gettext("Grace period (days)"), validators=[_in_range(0, 3650)]
    )
    cancelled = RadioField(
        lazy_gettext("When a patron cancels"),
        choices=choices([
            ("paid_period", lazy_gettext("Keep access until the end of the period they paid for")),
            ("at_once", lazy_gettext("Lock patron content at once")),
        ]),
    )
    first_charge = RadioField(
        lazy_gettext("A new pledge whose first payment has not gone through yet"),
        choices=choices([
            ("entitled_at_once", lazy_gettext("Unlock at once (generous)")),
            ("after_first_charge", lazy_gettext("Unlock after the first successful payment")),
        ]),
    )
    count_free_trials = BooleanField(lazy_gettext("Free trials unlock their tier"))
    count_gifted = BooleanField(lazy_gettext("Gifted memberships unlock their tier"))
    missing_runs = WholeNumberField(
        lazy_gettext("A patron missing from this many complete syncs in a row loses access"),
        validators=[_in_range(1)],
    )
    missing_hours = WholeNumberField(
        lazy_gettext("…or this many hours after the first sync that missed them (empty: the count alone decides)"),
        validators=[Optional(), _in_range(1, 87600)],
    )
    breaker_min_patrons = WholeNumberField(
        lazy_gettext("Hold a sync for my approval when it would take access from more than this many patrons…"),
        validators=[_in_range(0)],
    )
    breaker_percent = StringField(lazy_gettext("…and more than this percentage of all patrons"))

    ERROR_FIELDS = {
        "declined_grace_days": "declined_grace_days",
        "declined": "declined",
        "cancelled": "cancelled",
        "first_charge": "first_charge",
        "count_free_trials": "count_free_trials",
        "count_gifted": "count_gifted",
        "missing_runs": "missing_runs",
        "missing_hours": "missing_hours",
        "breaker_min_patrons": "breaker_min_patrons",
        "breaker_fraction": "breaker_percent",
    }

    def fill_from(self, settings: PolicySettings) -> None:
        """Show ``settings`` in the form (a GET)."""
        for name in (
            "declined",
            "declined_grace_days",
            "cancelled",
            "first_charge",
            "count_free_trials",
            "count_gifted",
            "missing_runs",
            "missing_hours",
            "breaker_min_patrons",
        ):
            getattr(self, name).data = getattr(settings, name)
        self.breaker_percent.data = _percent_text(settings.breaker_fraction)

    def settings(self) -> PolicySettings | None:
        """The settings typed in, validated by :class:`PolicySettings`; ``None`` (and errors on the form) if not."""
        if not self.validate():
            return None
        try:
            fraction = Decimal((self.breaker_percent.data or "").strip().rstrip("%").strip()) / 100
        except InvalidOperation:
            self.breaker_percent.errors = [gettext("Write a percentage, like 10")]
            return None
        if not fraction.is_finite() or not 0 < fraction <= 1:
            self.breaker_percent.errors = [gettext("The percentage must be above 0 and at most 100.")]
            return None
        try:
            return PolicySettings.from_dict(
                {
                    "declined": self.declined.data,
                    "declined_grace_days": self.declined_grace_days.data,
                    "cancelled": self.cancelled.data,
                    "first_charge": self.first_charge.data,
                    "count_free_trials": bool(self.count_free_trials.data),
                    "count_gifted": bool(self.count_gifted.data),
                    "missing_runs": self.missing_runs.data,
                    "missing_hours": self.missing_hours.data,
                    "breaker_min_patrons": self.breaker_min_patrons.data,
                    "breaker_fraction": float(fraction),
                }
            )
        except (ValueError, TypeError) as exc:
            attach_error(self, str(exc), self.ERROR_FIELDS)
            return None


def _percent_text(fraction: float) -> str:
    text = f"{fraction * 100:.2f}".rstrip("0").rstrip(".")
    return text or "0"



# -- comps ------------------------------------------------------------------------------------------------------------


class CompForm(FlaskForm):
    """Grant a comp (:func:`flask_patronlock.comps.grant_comp` checks it; its :class:`~flask_patronlock.comps.CompError`
    is shown next to the field it names)."""

    who = RadioField(
        lazy_gettext("Who is it for?"),
        choices=choices(
            [("member", lazy_gettext("A Patreon member")), ("user", lazy_gettext("An account on this site"))]
        ),
        default="member",
    )
    member = StringField(lazy_gettext("Patreon member: their e-mail address or member id"))
    user_id = StringField(lazy_gettext("Account on this site: its user id"))
    access = SelectField(lazy_gettext("What it opens"), choices=[], validate_choice=False)
    note = StringField(lazy_gettext("Note (why; only you see it)"))
    ends_on = DateField(lazy_gettext("Ends on (leave empty for no end)"), validators=[Optional()])

    #: CompError.field -> the form field it is shown next to.
    ERROR_FIELDS = {
        "who": "who",
        "member": "member",
        "patreon_user": "member",
        "user": "user_id",
        "access": "access",
        "lock": "access",
        "tier": "access",
        "note": "note",
        "expires_at": "ends_on",
    }

    def set_access_choices(self, locks: Iterable[tuple[str, str]], tiers: Iterable[TierSnapshot], symbol: str) -> None:
        """Offer every declared lock (``(name, description)``) and every tier of the campaign, cheapest first."""
        pairs = [("", gettext("Choose a lock or a tier"))]
        pairs += [
            (
                f"lock:{name}",
                gettext("The lock %(lock)s: %(text)s", lock=name, text=text) if text
                else gettext("The lock %(lock)s", lock=name),
            )
            for name, text in locks
        ]
        pairs += [
            (
                f"tier:{t.id}",
                gettext(
                    "Everything the %(tier)s tier opens (%(amount)s a month)",
                    tier=t.title or t.id,
                    amount=_amount(t.amount_cents, symbol),
                ),
            )
            for t in tiers
        ]
        self.access.choices = choices(pairs)

    def target(self) -> tuple[str | None, str | None]:
        """``(lock, tier id)`` as chosen (both ``None`` when nothing is)."""
        kind, _, value = (self.access.data or "").partition(":")
        return (value or None, None) if kind == "lock" else (None, value or None) if kind == "tier" else (None, None)
