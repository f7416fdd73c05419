#!/usr/bin/env python3
"""Independent oracle for src/sign/gcs_v4.rs: google-cloud-storage's V4 URL signing.

usage: gcs_v4.py rsa KEY.json ENDPOINT RESOURCE METHOD EXPIRES YYYYMMDDTHHMMSSZ [RESPONSE_TYPE]
       gcs_v4.py hmac ACCESS_ID SECRET ENDPOINT RESOURCE METHOD EXPIRES YYYYMMDDTHHMMSSZ [RESPONSE_TYPE]
Prints the signed URL. Needs `pip install google-cloud-storage`.

`rsa` is the library's own signer (`_signing.generate_signed_url_v4` with the service account's
credentials, offline). The library has no HMAC form of V4 signing, so `hmac` takes the library's
canonicalisation (`get_canonical_headers`, `_url_encode`) and derives the key as Google's HMAC
documentation says, with the standard library: independent of the Rust code, not of Google's
helpers.
"""
import datetime
import hashlib
import hmac
import sys
import urllib.parse

try:
    from google.cloud.storage import _signing
    from google.oauth2 import service_account
except ImportError as e:  # the Rust test turns this into a failure naming the fix
    sys.exit(f"missing python module ({e}): pip install google-cloud-storage")


def rsa(keyfile, endpoint, resource, method, expires, ts, response_type=None):
    creds = service_account.Credentials.from_service_account_file(keyfile)
    return _signing.generate_signed_url_v4(
        creds,
        resource,
        expiration=datetime.timedelta(seconds=int(expires)),
        api_access_endpoint=endpoint,
        method=method,
        response_type=response_type,
        _request_timestamp=ts,
    )


def hmac_url(access_id, secret, endpoint, resource, method, expires, ts, response_type=None):
    date = ts[:8]
    scope = f"{date}/auto/storage/goog4_request"
    headers = {"Host": urllib.parse.urlparse(endpoint).netloc}
    canonical_headers, ordered = _signing.get_canonical_headers(headers)
    signed_headers = ";".join(k for k, _ in ordered)
    q = {
        "X-Goog-Algorithm": "GOOG4-HMAC-SHA256",
        "X-Goog-Credential": f"{access_id}/{scope}",
        "X-Goog-Date": ts,
        "X-Goog-Expires": expires,
        "X-Goog-SignedHeaders": signed_headers,
    }
    if response_type:
        q["response-content-type"] = response_type
    query = _signing._url_encode(q)
    canonical = "\n".join(
        [method, resource, query, "\n".join(canonical_headers) + "\n", signed_headers, "UNSIGNED-PAYLOAD"]
    )
    sts = "\n".join(
        ["GOOG4-HMAC-SHA256", ts, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("GOOG4" + secret).encode()
    for part in (date, "auto", "storage", "goog4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    return f"{endpoint}{resource}?{query}&X-Goog-Signature={sig}"


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "rsa":
        print(rsa(*args))
    elif mode == "hmac":
        print(hmac_url(*args))
    else:
        sys.exit(f"unknown mode {mode}")


main()
