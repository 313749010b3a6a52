"""Gradual rollout: which users may use SnapTrade (``SNAPTRADE_ROLLOUT``).

The guide's three stages map to one setting::

    SNAPTRADE_ROLLOUT="allow=ops-1,ops-2"                       # alpha: internal accounts only
    SNAPTRADE_ROLLOUT="allow=ops-1,ops-2,beta-7"                # beta: trusted users added
    SNAPTRADE_ROLLOUT="allow=ops-1,ops-2,beta-7;percent=10"     # release: plus 10% of everyone
    SNAPTRADE_ROLLOUT="percent=10;salt=<secret>"                # a cohort outsiders cannot predict

A user is in when listed, or when their *bucket* (a hash of the user id mapped to [0, 100)) is
below the percentage. The bucket never changes for a user, so the same user is always in or out
for a given percentage, and raising the percentage only adds users. With ``salt`` the hash is
keyed (HMAC-SHA256): nobody without the salt can tell which ids fall in the cohort. Unset, or
``percent=100``, lets everyone in.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.redaction import register_secret

__all__ = ["Rollout"]

_BUCKETS = 10_000  # hundredths of a percent


@dataclass(frozen=True)
class Rollout:
    """Who is in: an allow-list and/or a stable percentage cohort.

    Attributes:
        allow: User ids always in.
        percent: Share of all other users in, 0 to 100 (hundredths of a percent are honoured).
        salt: Keys the hash when set (keep it secret to make the cohort unpredictable).
    """

    allow: frozenset[str] = frozenset()
    percent: float = 0.0
    salt: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.percent <= 100:
            raise SnapTradeConfigurationError(
                f"SNAPTRADE_ROLLOUT percent must be between 0 and 100, got {self.percent}"
            )

    @classmethod
    def parse(cls, text: str) -> Rollout:
        """Parse ``allow=a,b;percent=10;salt=s`` (any part may be left out, in any order)."""
        allow: set[str] = set()
        percent = 0.0
        salt: str | None = None
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            name, value = name.strip().lower(), value.strip()
            if not sep:
                raise SnapTradeConfigurationError(
                    f"SNAPTRADE_ROLLOUT part {part!r} is not name=value; use allow=a,b;percent=10;salt=..."
                )
            if name == "allow":
                allow.update(u.strip() for u in value.split(",") if u.strip())
            elif name == "percent":
                try:
                    percent = float(value.rstrip("%"))
                except ValueError:
                    raise SnapTradeConfigurationError(f"SNAPTRADE_ROLLOUT percent {value!r} is not a number") from None
            elif name == "salt":
                if not value:
                    raise SnapTradeConfigurationError("SNAPTRADE_ROLLOUT salt is empty; remove it or give a value")
                register_secret(value)
                salt = value
            else:
                raise SnapTradeConfigurationError(
                    f"SNAPTRADE_ROLLOUT has an unknown part {name!r}; the parts are allow, percent and salt"
                )
        return cls(frozenset(allow), percent, salt)

    def bucket(self, user_id: str) -> int:
        """The user's fixed bucket in ``[0, 10000)`` (hundredths of a percent)."""
        data = user_id.encode()
        if self.salt is None:
            digest = hashlib.sha256(b"aims-snaptrade rollout\n" + data).digest()
        else:
            digest = hmac.new(self.salt.encode(), data, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") % _BUCKETS

    def includes(self, user_id: str) -> bool:
        """``True`` when ``user_id`` may use SnapTrade."""
        return user_id in self.allow or self.bucket(user_id) < round(self.percent * _BUCKETS / 100)

    def __repr__(self) -> str:
        salted = ", salted" if self.salt else ""
        return f"Rollout(allow={len(self.allow)} users, percent={self.percent}{salted})"
