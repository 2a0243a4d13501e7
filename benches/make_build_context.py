#!/usr/bin/env python3
"""Makes the many-files build context for benches/build.sh: DIR/src/dNNN/fNNNN, FILES files spread
evenly over DIRS directories, each SIZE bytes of pseudo-random data (seeded, so every run of the
benchmark copies the same bytes), plus DIR/Dockerfile.

usage: make_build_context.py DIR --base IMAGE [--files 10000] [--dirs 100] [--size 21504]

Random data keeps anything from getting cheaper through compression or deduplication.
"""

import argparse
import os
import random


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--base", required=True)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--dirs", type=int, default=100)
    parser.add_argument("--size", type=int, default=21504)
    args = parser.parse_args()

    rng = random.Random(20261123)
    src = os.path.join(args.dir, "src")
    per_dir = args.files // args.dirs
    for d in range(args.dirs):
        sub = os.path.join(src, f"d{d:03}")
        os.makedirs(sub, exist_ok=True)
        for f in range(per_dir):
            with open(os.path.join(sub, f"f{f:04}"), "wb") as out:
                out.write(rng.randbytes(args.size))
    with open(os.path.join(args.dir, "Dockerfile"), "w") as out:
        out.write(f"FROM {args.base}\nCOPY src /app/src\nRUN find /app -type f | wc -l > /count\n")


if __name__ == "__main__":
    main()
