"""SigV4 signature checks, as API Gateway makes them for an IAM-authorized method.

The vault's internal routes are IAM-authorized in AWS: API Gateway refuses a request whose
signature does not verify, and tells the function who signed it. The local front door of
the vault does the same with the stack's fixed credentials, so that the vault is called
locally exactly as it is in AWS, and an unsigned call is refused here too.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from collections.abc import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MAX_CLOCK_SKEW = dt.timedelta(minutes=15)  # what AWS tolerates between signer and verifier
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;\-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str = "execute-api",
    now: dt.datetime | None = None,
) -> bool:
    """Whether the request was signed, recently, with these credentials for this service."""
    lowered = {name.lower(): value for name, value in headers.items()}
    found = _AUTHORIZATION.match(lowered.get("authorization", ""))
    if found is None or found["key"] != access_key:
        return False
    if found["region"] != region or found["service"] != service:
        return False
    stamp = lowered.get("x-amz-date", "")
    try:
        signed_at = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return False
    if abs((now or dt.datetime.now(dt.UTC)) - signed_at) > MAX_CLOCK_SKEW:
        return False
    names = found["signed"].split(";")
    if "host" not in names or any(name not in lowered for name in names):
        return False
    request = AWSRequest(
        method=method, url=url, data=body or None, headers={n: lowered[n] for n in names}
    )
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(access_key, secret_key), service, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    return hmac.compare_digest(expected, found["signature"])
