"""Locks on the site's own content: a model mixin that gives each row a lock, and a form field to pick it.

A site's post editor stores a lock per post; the post's page passes it to ``{% patronlock post.lock %}`` or
``@locked(lock_from=...)``::

    from flask_patronlock.content import LockedContentMixin, LockField

    class Post(LockedContentMixin, db.Model):
        id = db.Column(db.Integer, primary_key=True)
        title = db.Column(db.String(200))

    class PostForm(FlaskForm):
        title = StringField("Title")
        lock = LockField("Who may read it")     # "Public" and every lock, declared in code or made by the creator

The column holds a lock's name, or ``""`` for public. What it reads back is a
:class:`~flask_patronlock.declarations.LockName`: if its lock was deleted since, the post stays locked to everyone but
admins (and the log says so) instead of opening or failing the page.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import String, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, declared_attr, mapped_column
from sqlalchemy.types import TypeDecorator
from wtforms import SelectField
from wtforms.utils import unset_value

from .admin.forms import choice
from .declarations import LockName
from .explain import describe_rule
from .state import get_state

__all__ = ["LockColumn", "LockField", "LockedContentMixin", "lock_usage"]


class LockColumn(TypeDecorator[str]):
    """A lock's name as stored by a site's content: ``""`` is public. Reads back a
    :class:`~flask_patronlock.declarations.LockName`, so a name whose lock was deleted fails closed."""

    impl = String(100)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str:
        return str(value or "")

    def process_result_value(self, value: str | None, dialect: Dialect) -> str:
        return LockName(value or "")


#: every model class that uses the mixin (for :func:`lock_usage`).
_models: weakref.WeakSet[type[LockedContentMixin]] = weakref.WeakSet()


class LockedContentMixin:
    """A Flask-SQLAlchemy model mixin adding ``lock``: the name of the lock in front of the row (``""``: public),
    indexed, so the settings page can say how many rows use a lock before it is deleted (:func:`lock_usage`).

    Set ``locked_content_label`` (and, if adding an "s" is wrong, ``locked_content_plural``) on the model to name
    its rows on the settings page ("3 posts"); the default is the class name in lower case.
    """

    #: how the settings page names one of these rows ("post").
    locked_content_label: str = ""
    #: how it names several ("posts"); empty: the label and an "s".
    locked_content_plural: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _models.add(cls)

    @declared_attr
    def lock(cls) -> Mapped[str]:
        return mapped_column(LockColumn(), nullable=False, default="", server_default="", index=True)


def lock_usage(name: str) -> list[tuple[str, int]]:
    """How many rows of each :class:`LockedContentMixin` model of the current app use the lock ``name``, as
    ``(label, count)`` for the models where it is more than none (the label in the singular for one row)."""
    db = get_state().db
    found = []
    for model in sorted(_models, key=lambda m: m.__name__):
        table = getattr(model, "__table__", None)
        if table is None or table.metadata is not db.metadata or "lock" not in table.c:
            continue  # abstract, another app's model, or a subclass sharing its parent's table
        mapper = getattr(model, "__mapper__", None)
        if mapper is None or mapper.local_table is not table:
            continue
        count = db.session.execute(select(func.count()).select_from(table).where(table.c.lock == name)).scalar_one()
        if count:
            one = model.locked_content_label or model.__name__.lower()
            found.append((one if count == 1 else model.locked_content_plural or one + "s", int(count)))
    return found


class LockField(SelectField):
    """A select of "Public" and every lock in force (declared in code or made on the settings page), each with who
    may pass it. Its data is the lock's name, or ``""`` for public: what a :class:`LockedContentMixin` column stores.

    A row whose lock was deleted keeps it as a choice, marked so, so saving the form for another reason does not
    change who may see the row.

    :param public_label: the label of the public choice.
    """

    def __init__(
        self, label: str | None = None, validators: Any = None, *, public_label: str = "Public: everyone", **kwargs: Any
    ) -> None:
        super().__init__(label if label is not None else "Who may see it", validators, **kwargs)
        self.public_label = public_label

    def process(self, formdata: Any, data: Any = unset_value, extra_filters: Any = None) -> None:
        state = get_state()
        snapshot = state.settings.current()
        options = [choice("", self.public_label)]
        for lock in snapshot.all_locks(state.declarations.locks):
            rule = snapshot.rule_for(lock)
            options.append(choice(lock.name or "", f"{lock.display_name}: {describe_rule(rule, snapshot.tiers)}"))
        self.choices = options
        super().process(formdata, data, extra_filters)
        current = self.object_data
        known = {lock.name for lock in snapshot.all_locks(state.declarations.locks)}
        if current and current not in known:
            self.choices.append(choice(str(current), f"{current} (deleted: nobody but admins may see it)"))

    def process_data(self, value: Any) -> None:
        self.data = "" if value is None else str(value)
