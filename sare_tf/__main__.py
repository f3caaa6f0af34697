import sys

from sare_tf.cli import main

sys.exit(main())
