"""The main job end to end on the synthetic city: what `sare-tf demo` runs.

`sare_tf.demo.config` holds its presets (`DemoConfig`, `demo_training`), light to import;
`sare_tf.demo.run.run_demo` runs it (TensorFlow and everything else it needs).
"""

from __future__ import annotations

from sare_tf.demo.config import DEMO_TRAINING_FLAGS, DemoConfig, demo_training

__all__ = ["DEMO_TRAINING_FLAGS", "DemoConfig", "demo_training"]
