"""Stores named by URL scheme: built-in schemes first, then installed entry points.

Every store this library opens from a URL (``SNAPTRADE_SECRET_STORE_URL`` and the other
``*_STORE_URL`` settings) is chosen here by the URL's scheme. The library's own schemes
(``memory``, ``sqlite``, ``postgresql`` ...) come from the ``builtins`` mapping the caller passes;
any other scheme is looked up among the installed packages' entry points of the store kind's group:

==========================================  ==========================================
Entry-point group                           Store kind
==========================================  ==========================================
``aims_snaptrade.secret_stores``            SnapTrade user secrets
``aims_snaptrade.consent_stores``           users' consent records
``aims_snaptrade.audit_stores``             the audit trail
``aims_snaptrade.webhook_dedupe_stores``    webhook deliveries already handled
``aims_snaptrade.order_intent_stores``      order intents (idempotent trading)
``aims_snaptrade.sync_ledgers``             incremental-sync progress
==========================================  ==========================================

A package registers its store in its ``pyproject.toml``::

    [project.entry-points."aims_snaptrade.secret_stores"]
    vault = "my_package.vault_store:open_store"

and ``SNAPTRADE_SECRET_STORE_URL=vault://...`` then opens it through ``open_store``. What a
factory receives depends on the store kind (see that kind's ``open_*`` function); the secret
store's factory is called as ``factory(url, keyring)``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aims_snaptrade.errors import SnapTradeConfigurationError

__all__ = ["STORE_GROUPS", "known_schemes", "probing", "resolve_store_factory", "url_scheme"]

STORE_GROUPS: Mapping[str, str] = {
    "aims_snaptrade.secret_stores": "SnapTrade user secrets",
    "aims_snaptrade.consent_stores": "users' consent records",
    "aims_snaptrade.audit_stores": "the audit trail",
    "aims_snaptrade.webhook_dedupe_stores": "webhook deliveries already handled",
    "aims_snaptrade.order_intent_stores": "order intents",
    "aims_snaptrade.sync_ledgers": "incremental-sync progress",
}
"""The entry-point groups store factories are registered in, with what each kind of store holds."""


def url_scheme(url: str, *, setting: str) -> str:
    """The lower-cased scheme of a store URL; a URL without ``scheme://`` names ``setting`` in the error."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise SnapTradeConfigurationError(
            f"{setting} {url!r} has no scheme; write it as scheme://..., e.g. sqlite:///path/to/file.db"
        )
    return scheme.lower()


def known_schemes(group: str, builtins: Mapping[str, Callable[..., Any]]) -> list[str]:
    """Every scheme that resolves in ``group``: the built-in ones and the installed entry points, sorted."""
    return sorted({*builtins, *(ep.name.lower() for ep in entry_points(group=group))})


def resolve_store_factory(group: str, scheme: str, builtins: Mapping[str, Callable[..., Any]]) -> Callable[..., Any]:
    """Return the factory that opens stores of ``scheme`` in the entry-point ``group``.

    The built-in schemes in ``builtins`` win; otherwise the first installed entry point of
    ``group`` whose name equals ``scheme`` (case-insensitively) is loaded.

    Raises:
        SnapTradeConfigurationError: no built-in scheme or entry point has that name (the message
            lists the known schemes and how to register one), or the entry point cannot be loaded
            or is not callable.
    """
    scheme = scheme.lower()
    if scheme in builtins:
        factory = builtins[scheme]
        scratch = _SCRATCH.get()
        if scratch is not None and scheme == "sqlite":
            return _redirecting_missing_files(factory, scratch)
        return factory
    for ep in entry_points(group=group):
        if ep.name.lower() != scheme:
            continue
        try:
            factory = ep.load()
        except Exception as exc:  # an installed plug-in that does not import is a configuration fault
            raise SnapTradeConfigurationError(
                f"the {scheme!r} store registered in entry-point group {group!r} as {ep.value!r} "
                f"cannot be loaded ({type(exc).__name__}: {exc}); fix or reinstall the package providing it"
            ) from exc
        if not callable(factory):
            raise SnapTradeConfigurationError(
                f"the {scheme!r} store registered in entry-point group {group!r} as {ep.value!r} "
                "is not callable; register a factory function or class"
            )
        return factory  # type: ignore[no-any-return]
    known = ", ".join(f"{name}://" for name in known_schemes(group, builtins))
    noun = group.rpartition(".")[2].removesuffix("s").replace("_", " ")  # "secret_stores" -> "secret store"
    raise SnapTradeConfigurationError(
        f"unknown {noun} scheme {scheme!r} (entry-point group {group!r}); known schemes: {known}. "
        f"To add one, register a factory in your package's pyproject.toml: "
        f'[project.entry-points."{group}"] {scheme} = "your_package.module:factory", then reinstall it.'
    )


_SCRATCH: ContextVar[Path | None] = ContextVar("aims_snaptrade_store_scratch", default=None)


@contextmanager
def probing() -> Iterator[None]:
    """Open stores by URL without leaving storage behind (what ``aims-snaptrade verify`` does).

    Inside the block, a built-in ``sqlite:///`` store is opened on a throwaway file in a
    temporary directory instead (a copy of the file when it exists), removed when the block ends,
    so the real start-up path runs and creates or changes nothing where the URL points.
    PostgreSQL stores and plug-ins are opened as usual (a table a store creates at start-up
    is created); the secret store has its own read-only mode (``open_secret_store(create=False)``).
    """
    with tempfile.TemporaryDirectory(prefix="aims-snaptrade-probe-") as scratch:
        token = _SCRATCH.set(Path(scratch))
        try:
            yield
        finally:
            _SCRATCH.reset(token)


def _redirecting_missing_files(factory: Callable[..., Any], scratch: Path) -> Callable[..., Any]:
    def open_elsewhere(url: str, *args: Any, **kwargs: Any) -> Any:
        scheme, _, rest = url.partition("://")
        path = Path(unquote(rest[1:])) if rest.startswith("/") and "?" not in rest else None
        if path is not None:
            # One throwaway file per real path: stores sharing a database (consent and audit in
            # the secret store's file) still share it while probing.
            digest = hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:16]
            stand_in = scratch / f"{digest}-{path.name}"
            if path.exists() and not stand_in.exists():
                # An existing file is probed through a copy: a store creating its tables there
                # (the consent store in the secret store's file) must not change the real one.
                for suffix in ("", "-wal"):
                    source = Path(f"{path}{suffix}")
                    if source.exists():
                        shutil.copyfile(source, f"{stand_in}{suffix}")
            url = f"{scheme}:///{quote(str(stand_in))}"
        return factory(url, *args, **kwargs)

    return open_elsewhere
