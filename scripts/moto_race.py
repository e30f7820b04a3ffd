"""Races create-only puts of one key on an S3 endpoint and counts rounds with two winners.

    python3 scripts/moto_race.py ENDPOINT [ROUNDS] [WRITERS]

Each round, WRITERS threads put the same new key with ``If-None-Match: *`` at once; S3
lets exactly one succeed. Used to show moto's own server letting several succeed and
scripts/moto_server.py not (docs/RELIABILITY.md, section 3). Needs boto3.
"""

import sys
import threading

import boto3
import botocore
from botocore.config import Config


def main():
    endpoint = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    writers = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="race",
        aws_secret_access_key="race",
        region_name="us-east-1",
        config=Config(max_pool_connections=2 * writers, retries={"max_attempts": 1}),
    )
    s3.create_bucket(Bucket="race")
    doubled, refused = 0, 0
    for r in range(rounds):
        won = []
        barrier = threading.Barrier(writers)

        def put(i, r=r, won=won, barrier=barrier):
            nonlocal refused
            barrier.wait()
            try:
                s3.put_object(Bucket="race", Key=f"k{r}", Body=b"%d" % i * 1000, IfNoneMatch="*")
                won.append(i)
            except botocore.exceptions.ClientError as e:
                if e.response["Error"]["Code"] != "PreconditionFailed":
                    raise
                refused += 1

        threads = [threading.Thread(target=put, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        doubled += len(won) > 1
    print(f"{rounds} rounds of {writers} create-only puts of one key: {doubled} rounds with "
          f"more than one success, {refused} refused")
    sys.exit(1 if doubled else 0)


if __name__ == "__main__":
    main()
