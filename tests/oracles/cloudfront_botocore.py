#!/usr/bin/env python3
"""Independent oracle for src/sign/cloudfront.rs: botocore's CloudFrontSigner with python-rsa.

usage: cloudfront_botocore.py KEY.pem canned KEY_PAIR_ID URL EXPIRES
       cloudfront_botocore.py KEY.pem custom KEY_PAIR_ID URL EXPIRES RESOURCE
Prints the signed URL. Needs `pip install botocore rsa`.
"""
import datetime
import sys

try:
    import rsa
    from botocore.signers import CloudFrontSigner
except ImportError as e:  # the Rust test turns this into a failure naming the fix
    sys.exit(f"missing python module ({e}): pip install botocore rsa")


def main():
    pem, mode, key_id, url, expires = sys.argv[1:6]
    with open(pem, "rb") as f:
        key = rsa.PrivateKey.load_pkcs1(f.read())
    signer = CloudFrontSigner(key_id, lambda msg: rsa.sign(msg, key, "SHA-1"))
    when = datetime.datetime.fromtimestamp(int(expires), datetime.timezone.utc)
    if mode == "canned":
        print(signer.generate_presigned_url(url, date_less_than=when))
    elif mode == "custom":
        policy = signer.build_policy(sys.argv[6], when)
        print(signer.generate_presigned_url(url, policy=policy))
    else:
        sys.exit(f"unknown mode {mode}")


main()
