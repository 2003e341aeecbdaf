"""Jinja: the ``{% patronlock %}`` tag and the globals ``can_view``, ``current_patron``, ``patronlock_banner`` and
``patronlock_decision``.

The tag::

    {% patronlock "premium" %}
      Everything here is for viewers who may see "premium".
    {% endpatronlock %}                         {# anyone else gets the banner #}

    {% patronlock "premium" %}
      ...
    {% else %}
      Shown instead to anyone else (no automatic banner: call patronlock_banner("premium") where you want it).
    {% endpatronlock %}

    {% patronlock "premium" %}
      The opening paragraph: the teaser, shown to everyone.
    {% more %}
      The rest, for those who may see "premium"; anyone else gets the banner (or the else part) here.
    {% endpatronlock %}

    {% patronlock "premium" %}
      The full post.
    {% teaser %}
      An explicit teaser, shown only to those who may not see the post, above the banner (or the else part).
    {% endpatronlock %}

    {% patronlock "premium", published_at=post.published_at %}
      For a lock on "patrons at the time this was published": the decision is about this item's date.
    {% endpatronlock %}

The lock is any expression: a declared lock's name, or a :class:`~flask_patronlock.locks.Lock`; ``published_at``
(optional, after a comma) is any expression too. A block has at most
one of ``{% more %}`` and ``{% teaser %}``, and then at most one ``{% else %}``. The decision is made once per request
and lock, however many blocks and ``can_view`` calls use it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from markupsafe import Markup

from .banners import render_banner
from .locks import as_lock, can_view, current_patron, decision_for

__all__ = ["PatronLockExtension", "init_app"]

_SECTION_ENDS = ("name:more", "name:teaser", "name:else", "name:endpatronlock")


class PatronLockExtension(Extension):
    """The ``{% patronlock LOCK %}…{% more %}…{% teaser %}…{% else %}…{% endpatronlock %}`` tag."""

    tags = {"patronlock"}

    def parse(self, parser: Parser) -> nodes.Node | list[nodes.Node]:
        lineno = next(parser.stream).lineno
        lock = parser.parse_expression()
        published: nodes.Expr = nodes.Const(None)
        if parser.stream.skip_if("comma"):
            name = parser.stream.expect("name")
            if name.value != "published_at":
                parser.fail(f"{{% patronlock %}} takes published_at=..., not {name.value}", name.lineno)
            parser.stream.expect("assign")
            published = parser.parse_expression()
        sections: dict[str, list[nodes.Node]] = {}
        kind = "body"
        while True:
            sections[kind] = parser.parse_statements(_SECTION_ENDS)
            token = next(parser.stream)
            tag = token.value
            if tag == "endpatronlock":
                break
            if tag in ("more", "teaser") and ("more" in sections or "teaser" in sections or "else" in sections):
                parser.fail(
                    f"{{% {tag} %}} must come once, before {{% else %}}, and not together with "
                    f"{{% {'teaser' if tag == 'more' else 'more'} %}}",
                    token.lineno,
                )
            if tag == "else" and "else" in sections:
                parser.fail("a {% patronlock %} block has at most one {% else %}", token.lineno)
            kind = tag

        allowed_call = self.call_method("_can_view", [lock, published], lineno=lineno)
        denied: list[nodes.Node] = (
            sections["else"]
            if "else" in sections
            else [nodes.Output([self.call_method("_banner", [lock, published], lineno=lineno)], lineno=lineno)]
        )
        if "more" in sections:  # the part before {% more %} is the teaser everyone sees
            return [
                *sections["body"],
                nodes.If(allowed_call, sections["more"], [], denied, lineno=lineno),
            ]
        teaser = sections.get("teaser", [])
        return nodes.If(allowed_call, sections["body"], [], [*teaser, *denied], lineno=lineno)

    @staticmethod
    def _can_view(lock: Any, published_at: Any = None) -> bool:
        return can_view(lock, published_at=published_at)

    @staticmethod
    def _banner(lock: Any, published_at: Any = None) -> Markup:
        return render_banner(lock, published_at=published_at)


def _banner_global(lock: Any = None, *, published_at: Any = None, **rule_kwargs: Any) -> Markup:
    """``{{ patronlock_banner("premium") }}``: the banner for the current viewer (empty when they may see it); with
    ``published_at=``, about an item published then."""
    return render_banner(as_lock(lock, rule_kwargs), published_at=published_at)


def init_app(app: Flask) -> None:
    """Add the tag and the globals to ``app``'s Jinja environment."""
    app.jinja_env.add_extension(PatronLockExtension)
    app.jinja_env.globals.update(
        can_view=can_view,
        current_patron=current_patron,
        patronlock_banner=_banner_global,
        patronlock_decision=decision_for,
    )
