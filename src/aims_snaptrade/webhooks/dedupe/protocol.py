"""The extension point: what a webhook de-duplication store must do.

A receiver *claims* a ``webhookId`` before calling the handler. Of several replicas that receive
the same delivery (SnapTrade redelivers, a load balancer duplicates), exactly one gets
``"claimed"``; the others get ``"in_progress"`` while it works and ``"processed"`` once it
completed. A claim is a lease: if its holder dies, the claim expires after ``lease_seconds`` and
the next delivery is processed. Every call carries the holder's ``token`` so a replica whose lease
ran out cannot complete or release a claim another replica took over.

What happens when the handler fails: the receiver *releases* the claim (deletes it) and answers
5xx, so SnapTrade's redelivery finds no claim and is processed, once.

Run :class:`aims_snaptrade.testing.webhook_dedupe_conformance.WebhookDedupeStoreConformance`
against your own store. Stores declare ``kind`` (a short name) and ``shared`` (``True`` when
replicas on other hosts see the same claims: Redis, PostgreSQL).
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

__all__ = ["ClaimOutcome", "WebhookDedupeStore"]

ClaimOutcome = Literal["claimed", "in_progress", "processed"]
"""``claimed``: process it; ``in_progress``: another holder is processing it; ``processed``: done before."""


@runtime_checkable
class WebhookDedupeStore(Protocol):  # pragma: no mutate block (docs/testing.md: Protocols)
    """Atomic claims on webhook ids, thread-safe (the async receiver calls it from worker threads).

    Contract (checked by the conformance suite):

    * ``claim`` is atomic: of any number of concurrent claims of one id (threads, processes,
      hosts for shared stores) exactly one returns ``"claimed"``.
    * A claim not completed within ``lease_seconds`` expires: the next ``claim`` gets it.
    * ``complete`` turns the holder's claim into a record kept ``retention_seconds``, during which
      every ``claim`` answers ``"processed"``; it returns ``False`` (and changes nothing) when the
      token no longer holds the claim.
    * ``release`` deletes the holder's claim (``False`` when the token does not hold it).
    * Failures raise :class:`~aims_snaptrade.errors.SnapTradeWebhookDedupeStoreError`.
    """

    kind: str
    shared: bool

    def claim(self, webhook_id: str, token: str, lease_seconds: float) -> ClaimOutcome:
        """Try to take ``webhook_id`` for ``lease_seconds``."""
        ...

    def complete(self, webhook_id: str, token: str, retention_seconds: float) -> bool:
        """Mark the claim processed; remembered for ``retention_seconds``."""
        ...

    def release(self, webhook_id: str, token: str) -> bool:
        """Give the claim up so that a redelivery is processed."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...
