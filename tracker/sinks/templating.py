"""Jinja2 for the sinks' messages: the packaged templates, a sink's own folder before them, and
each template checked at start (compiled, every variable known, rendered once with a sample)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jinja2
import jinja2.meta

from tracker.errors import ConfigError


def environment(
    overrides: str | None,
    *,
    finalize: Callable[[Any], Any] | None = None,
    helpers: Mapping[str, Callable[..., Any]] | None = None,
) -> jinja2.Environment:
    """Templates from ``overrides`` (a sink's ``templates`` folder) first, then the packaged
    ones; HTML autoescaped. ``finalize`` sees every ``{{ value }}`` before it is written (the
    chat sinks escape there), ``helpers`` become functions the templates can call."""
    loaders: list[jinja2.BaseLoader] = []
    if overrides is not None:
        loaders.append(jinja2.FileSystemLoader(overrides))
    loaders.append(jinja2.PackageLoader("tracker", "templates"))
    made = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        finalize=finalize,
    )
    made.globals.update(helpers or {})
    return made


def compiled(
    environment: jinja2.Environment, sink: str, name: str, sample: dict[str, Any]
) -> jinja2.Template:
    """One template, compiled and rendered once with ``sample``; a broken one is a ConfigError."""
    try:
        template = environment.get_template(name)
        _check_names(environment, name, known=set(sample))
        template.render(sample)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(
            f"sink {sink!r}: template {name} line {exc.lineno}: {exc.message}"
        ) from None
    except jinja2.TemplateError as exc:
        raise ConfigError(
            f"sink {sink!r}: template {name}: {exc.message}; "
            f"the variables are {', '.join(sorted(sample))}"
        ) from None
    return template


def _check_names(environment: jinja2.Environment, name: str, *, known: set[str]) -> None:
    """Every variable the template names, in every branch (a render takes only one), exists."""
    assert environment.loader is not None  # noqa: S101 - environment() always sets one
    source, _path, _fresh = environment.loader.get_source(environment, name)
    named = jinja2.meta.find_undeclared_variables(environment.parse(source))
    unknown = named - known - set(environment.globals)  # range, dict, ... are Jinja's own
    if unknown:
        raise jinja2.UndefinedError(f"{', '.join(map(repr, sorted(unknown)))} is undefined")
