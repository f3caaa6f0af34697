"""`python -m sare_tf.bench NAME [flags]`: one benchmark with the flags of `sare-tf bench NAME`;
benchmarks start their child measurements this way."""

import sys

from sare_tf.bench.common import main

if __name__ == "__main__":
    sys.exit(main())
