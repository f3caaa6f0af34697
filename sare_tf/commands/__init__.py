"""Subcommands of ``sare-tf``: one module each, discovered by ``sare_tf.cli``."""
