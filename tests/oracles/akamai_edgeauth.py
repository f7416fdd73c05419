#!/usr/bin/env python3
"""Independent oracle for src/sign/hmac_token.rs: Akamai's reference EdgeAuth implementation.

usage: akamai_edgeauth.py HEX_KEY acl|url PATH END_TIME
Prints the token (the value of __token__). Needs `pip install akamai-edgeauth`.
"""
import sys

try:
    from akamai.edgeauth import EdgeAuth
except ImportError as e:  # the Rust test turns this into a failure naming the fix
    sys.exit(f"missing python module ({e}): pip install akamai-edgeauth")


def main():
    key, kind, path, end_time = sys.argv[1:5]
    auth = EdgeAuth(key=key, algorithm="sha256", end_time=int(end_time))
    if kind == "acl":
        print(auth.generate_acl_token(path))
    elif kind == "url":
        print(auth.generate_url_token(path))
    else:
        sys.exit(f"unknown kind {kind}")


main()
