"""Redaction cost per log line and per exception, against the number of registered secrets.

Registers N user secrets (UUID-shaped, as SnapTrade issues them, plus one in fifty holding
quotes, backslashes and non-ASCII so every encoded form is in the tables) and measures, for
N = 10, 1,000 and 100,000:

* ``redact()`` of a 160-character log line without a secret, and of one holding a secret;
* a log record of a redacted logger, created and formatted (message, arguments);
* one exception turned into a library error: ``scrub_exception`` of an SDK-like error text
  (URL with userSecret, headers with Signature) and a ``SnapTradeError`` built from it.

Printed: microseconds per operation (median of 7 runs) and the ratio of the 100,000 row to the
10 row (1.0 means the cost does not grow with the number of secrets).

    python benchmarks/redaction_cost.py
"""

from __future__ import annotations

import logging
import statistics
import time
import uuid
from collections.abc import Callable

from aims_snaptrade.errors import SnapTradeError
from aims_snaptrade.redaction import install_log_redaction, isolated_registry, redact, register_secret, scrub_exception

PLAIN = "GET /api/v1/accounts/all HTTP/1.1 200 elapsed=0.123s request_id=5d75c02577a2463db38a72acfe46cbb8 retries=0 ok"


def _per_call_us(action: Callable[[], object], repeat: int = 2000) -> float:
    runs = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(repeat):
            action()
        runs.append((time.perf_counter() - started) / repeat * 1e6)
    return statistics.median(runs)


class _Null(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def measure(count: int) -> dict[str, float]:
    secrets = [str(uuid.uuid4()) if i % 50 else f'q"\\é-{uuid.uuid4()}' for i in range(count)]
    with isolated_registry():
        for secret in secrets:
            register_secret(secret)
        target = secrets[count // 2]
        with_secret = f"GET /api/v1/accounts/all?userId=u-42&userSecret={target} failed: {target} rejected"
        logger = logging.getLogger("aims_snaptrade.bench")
        logger.propagate = False
        logger.handlers = [_Null()]
        logger.setLevel(logging.INFO)

        class SdkError(Exception):
            pass

        upstream = SdkError(
            f"(401)\nReason: Unauthorized\nHTTP response headers: HTTPHeaderDict({{'Signature': 'c2lnbmF0dXJl'}})\n"
            f'HTTP response body: b\'{{"detail": "GET /accounts?userSecret={target}"}}\''
        )
        return {
            "line without a secret": _per_call_us(lambda: redact(PLAIN)),
            "line with a secret": _per_call_us(lambda: redact(with_secret)),
            "log record": _per_call_us(lambda: logger.info("call %s failed: %s", "list_accounts", with_secret)),
            "exception": _per_call_us(lambda: SnapTradeError(scrub_exception(upstream), operation="x")),
        }


def main() -> None:
    install_log_redaction()
    rows = {count: measure(count) for count in (10, 1_000, 100_000)}
    names = list(rows[10])
    print(f"{'registered secrets':>20} " + " ".join(f"{name:>22}" for name in names))
    for count, figures in rows.items():
        print(f"{count:>20,} " + " ".join(f"{figures[name]:>19.1f} us" for name in names))
    ratios = " ".join(f"{rows[100_000][name] / rows[10][name]:>22.2f}" for name in names)
    print(f"{'ratio 100,000 / 10':>20} " + ratios)


if __name__ == "__main__":
    main()
