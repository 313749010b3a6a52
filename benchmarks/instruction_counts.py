"""Instructions per call: the raw SDK, the library's transport alone, and the library, counted by cachegrind.

Wall-time ratios on a shared two-core virtual machine move by tens of percent between runs (the
same loop of ``json.loads`` varied from 7.4 to 13.4 us per call in one minute here), so a change
of a few percent cannot be seen in ``client_speed.py``. Valgrind's cachegrind counts the
instructions a process executes, which does not depend on the machine's load: two runs of a
client, one with ``--calls`` more calls than the other, give its instructions per call exactly.
The server (``client_speed.py``'s) runs in its own process, outside the count.

Instructions are not time: C code (urllib3's socket calls, ``json``, pydantic-core) executes more
of them per cycle than Python bytecode does. Use it to compare changes, and ``client_speed.py``
for the goals.

Two shapes of traffic: the benchmark's own (one user, answers without rate-limit headers, as in
``client_speed.py``) and production's (SnapTrade's ``X-RateLimit-*`` headers on every answer, and a
new user, so a new signature to register for redaction, on every call).

    python benchmarks/instruction_counts.py [--calls 200] [--shape both] [--json PATH]   # needs valgrind
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# One client in a child process: start the server, warm up, then make `calls` calls. In the
# production shape the server sends SnapTrade's rate-limit headers on every answer and every call
# is for a new user (so a new secret lookup, a new budget plan and a new signature to register
# for redaction); the users (WARM_UP + the longer run's calls) are stored in both runs alike, so
# the difference between the runs is the calls alone.
CHILD = r"""
import subprocess, sys
sys.path.insert(0, sys.argv[3])
import client_speed as cs
variant, calls, shape, users = sys.argv[1], int(sys.argv[2]), sys.argv[4], int(sys.argv[5])
production = shape == "production"
server = subprocess.Popen([sys.executable, "-c", cs.SERVER, cs.BODY] + ([str(cs.RATE_LIMIT)] if production else []),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
base = f"http://127.0.0.1:{int(server.stdout.readline())}"
people = [(f"{cs.USER_ID}-{i}", f"{cs.USER_SECRET}-{i:06d}") for i in range(users)] if production else []
user = iter(people) if production else None
if variant == "raw":
    from snaptrade_client import SnapTrade, SnapTradeAuth
    auth = SnapTradeAuth.commercial_api_key(consumer_key=cs.CONSUMER_KEY, client_id=cs.CLIENT_ID)
    sdk = SnapTrade(host=base, auth=auth)
    if production:
        def call():
            user_id, secret = next(user)
            return sdk.account_information.list_all_user_accounts(user_id=user_id, user_secret=secret)
    else:
        call = lambda: sdk.account_information.list_all_user_accounts(user_id=cs.USER_ID, user_secret=cs.USER_SECRET)
else:
    from aims_snaptrade import SafeSnapTradeClient
    from aims_snaptrade._transport import Timeouts
    from aims_snaptrade.operations import get_operation
    options = cs.client_options(base)
    for user_id, secret in people:
        options["secret_store"].put(user_id, secret)
    client = SafeSnapTradeClient(**options)
    operation, timeouts = get_operation("list_all_user_accounts"), Timeouts(5.0, 30.0)
    if production:
        if variant == "transport":
            def call():
                user_id, secret = next(user)
                return client._transport.send(operation, {"user_id": user_id, "user_secret": secret}, timeouts)
        elif variant == "call":
            call = lambda: client.call("list_all_user_accounts", user_id=next(user)[0])
        else:
            call = lambda: client.list_accounts(next(user)[0])
    else:
        sent = {"user_id": cs.USER_ID, "user_secret": cs.USER_SECRET}
        if variant == "transport":
            call = lambda: client._transport.send(operation, sent, timeouts)
        elif variant == "call":
            call = lambda: client.call("list_all_user_accounts", user_id=cs.USER_ID)
        else:
            call = lambda: client.list_accounts(cs.USER_ID)
for _ in range(WARM_UP):
    call()
for _ in range(calls):
    call()
server.stdin.close()
server.wait()
"""
WARM_UP = 20
CHILD = CHILD.replace("WARM_UP", str(WARM_UP))

SHAPES = {
    "bench": "one user, answers without rate-limit headers",
    "production": "SnapTrade's X-RateLimit-* headers on every answer, a new user per call",
}
VARIANTS = {
    "raw": "raw SDK, list_all_user_accounts",
    "transport": "the SDK's method through the library's transport alone",
    "call": "library, call('list_all_user_accounts')",
    "ours": "library, list_accounts() (typed)",
}


def _instructions(variant: str, calls: int, shape: str, users: int) -> int:
    run = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            variant,
            str(calls),
            str(Path(__file__).parent),
            shape,
            str(users),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{run.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="extra calls of the longer run")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--shape", choices=[*SHAPES, "both"], default="both", help="which shape of traffic to count")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    users = WARM_UP + args.calls
    jobs = [(variant, calls, shape, users) for shape in shapes for variant in VARIANTS for calls in (0, args.calls)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # one valgrind per core
        counts = dict(zip(jobs, pool.map(lambda job: _instructions(*job), jobs), strict=True))
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for shape in shapes:
        per_call = {
            v: (counts[(v, args.calls, shape, users)] - counts[(v, 0, shape, users)]) / args.calls for v in VARIANTS
        }
        raw = per_call["raw"]
        print(f"{shape}: {SHAPES[shape]}")
        for variant, label in VARIANTS.items():
            print(
                f"  {label:58s} {per_call[variant] / 1e3:8.0f} k instructions/call"
                f"   ratio {per_call[variant] / raw:.2f}"
            )
        figures[shape] = {v: {"instructions_per_call": per_call[v], "ratio": per_call[v] / raw} for v in VARIANTS}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
