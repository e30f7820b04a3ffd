"""The data of the many-files benchmarks (run-many-files.sh, run-memory-by-files.sh): N files
of 1-16 KiB in directories of 1,000, every other one random (incompressible), the rest a
repeated line. Seeded: the same N gives the same names and sizes.

    python3 benches/many-files-data.py ROOT N
"""
import os
import random
import sys

root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    size = rng.randint(1024, 16384)
    body = os.urandom(size) if i % 2 else (b"node %d;" % i) * (size // 8 + 1)
    with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
        f.write(body[:size])
