"""Where a running local stack records how to reach it, so other commands find it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clearline.topology import IDEMPOTENCY_TABLE, MAIN_TABLE


def state_dir() -> Path:
    return Path(os.environ.get("CLEARLINE_STATE_DIR") or Path.home() / ".clearline" / "stacks")


@dataclass(frozen=True)
class StackInfo:
    api_url: str
    port: int
    aws_endpoint_url: str
    processor_url: str
    pid: int
    started: float
    bank_url: str = ""  # the sandbox bank payouts are sent to
    bank_accounts_key: str = ""  # the KMS key sealing bank account numbers (its ARN)
    rates_url: str = ""  # the sandbox FX rate provider the rates function pulls from
    vault_url: str = ""  # the card vault's origin: clearline.js, the card field, tokens
    checkout_url: str = ""  # the demo shop's checkout, a merchant's website of its own
    notifications_url: str = ""  # where the processor sends its (signed) dispute notices
    # The demo shop's test-mode merchant, for checking its payments through the API.
    demo_merchant_id: str = ""
    demo_secret_key: str = ""
    demo_publishable_key: str = ""
    main_table: str = MAIN_TABLE.name
    idempotency_table: str = IDEMPOTENCY_TABLE.name
    # Settings the stack's functions run with beyond the topology's (retry bases, timeouts).
    environment: dict[str, str] = field(default_factory=dict)
    # The vault function's own settings (its KMS keys, its public URL), kept apart: none of
    # Clearline's functions gets them.
    vault_environment: dict[str, str] = field(default_factory=dict)

    def write(self) -> Path:
        path = state_dir() / f"{self.port}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        # Readable by its owner only: it holds the demo merchant's secret key.
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(json.dumps(asdict(self), indent=2))
        temp.replace(path)  # readers never see a half-written file
        return path

    def remove(self) -> None:
        (state_dir() / f"{self.port}.json").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NoStackRunning(Exception):
    pass


def find_stack(port: int | None = None) -> StackInfo:
    """The stack on `port`, or the most recently started one that is still running."""
    paths = [state_dir() / f"{port}.json"] if port else sorted(state_dir().glob("*.json"))
    running = []
    for path in paths:
        try:
            info = StackInfo(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if _alive(info.pid):
            running.append(info)
        else:
            path.unlink(missing_ok=True)  # left behind by a stack that was killed
    if not running:
        where = f"on port {port}" if port else "anywhere"
        raise NoStackRunning(
            f"No local stack is running {where}. Start one with `make up` (or `clearline up`)."
        )
    return max(running, key=lambda info: info.started)
