"""What `sare-tf demo` runs with: its training presets and folders (light to import: the
command line reads them to build its flags)."""

from __future__ import annotations

import dataclasses

from sare_tf.config_options import option, out_option
from sare_tf.synthetic.settings import CITY_PRESETS
from sare_tf.training.config import TrainConfig


def _training_presets():
    demo = TrainConfig(
        loss="sare-joint", backbone="tiny", num_clusters=16, image_size=(96, 128), epochs=5,
        batch_size=4, num_negatives=5, optimizer="sgd", lr=1e-3, lr_halve_every=2,
        num_candidates=300, trainable_from=None, augment=False, precision="auto", seed=0,
        eval_batch_size=32, select_by="recall@1", tensorboard=False, verbose=1,
    )  # fmt: skip
    quick = dataclasses.replace(
        demo, lr_halve_every=0, image_size=(60, 80), epochs=1, num_clusters=8, num_negatives=5
    )
    return demo, quick


# The training flags `sare-tf demo` exposes (the other TrainConfig fields keep the preset's).
DEMO_TRAINING_FLAGS = (
    "loss", "epochs", "image_size", "num_clusters", "num_negatives", "lr", "optimizer",
    "precision", "seed",
)  # fmt: skip


def demo_training(quick: bool = False):
    """The demo's training preset (`TrainConfig`): the full demo, or the 1-2 minute `quick` one.

    The full preset trains the small group-normalised `tiny` backbone from scratch (no
    pretrained weights exist offline) with the paper's optimizer, SGD with momentum at lr 1e-3
    (halved every 2 epochs), for 5 epochs of 4 tuples per step with 5 hard negatives each. Five
    negatives instead of the paper's ten make a tuple 7 images instead of 12, so a step costs
    about 40 % less and 5 epochs (5 mining refreshes) fit the time 3 epochs of 10 negatives
    took; that recipe gained only +9.0 points of Recall@1 for seed 0 on AVX2 kernels, this one
    +12.5 to +21.0 for seed 0 over precisions and kernels, +14.5 to +41.5 for seeds 1 and 2
    (README, Results). AdamW at 1e-4 collapsed seed 1 at epoch 3 (Recall@1 +2.5 points): Adam moves every weight by about lr
    whatever its gradient, and the first steps move all local features the same way
    (docs/training_collapse.md); SGD's steps follow the gradient. `best.keras` is the epoch
    with the best validation Recall@1, the figure the demo reports (the paper picks by Recall@5;
    on the 100 validation queries the two disagree by a query or two, and Recall@5 picked
    seed 0's third epoch, +5.0 points on the test split, over its fifth, +13.5).
    """
    demo, quick_preset = _training_presets()
    return quick_preset if quick else demo


@dataclasses.dataclass
class DemoConfig:
    """Settings of `run_demo`: where things go, and the training preset.

    Attributes:
        data_dir: where the synthetic city is written (reused when it matches).
        preset: synthetic city preset ("demo"; the quick demo uses "tiny").
        out: run folder (metrics.json, plots, saliency panels, checkpoints).
        export_root: TF Serving model base folder; the model goes to `<root>/<export_name>/<v>/`.
        export_name: exported model name.
        quick: a 1-2 minute run on the tiny city (`demo_training(quick=True)`).
        saliency_method: tf-keras-vis method for the panels.
        training: the `TrainConfig` (default: `demo_training(quick)`; its `out` is replaced by
            `<out>/train`).
    """

    data_dir: str = option("data/synthetic_city", "city folder", group="demo", metavar="DIR")
    preset: str | None = option(
        None, "synthetic city size: tiny or demo (default demo)", group="demo",
        choices=CITY_PRESETS,
    )  # fmt: skip
    out: str = out_option("runs/demo", "run folder")
    export_root: str = option("saved_models", "SavedModel root", group="output", metavar="DIR")
    export_name: str = option("sare_demo", "exported model name", group="output", flag="--name")
    quick: bool = option(
        False, "a 1-2 minute run on the tiny city (1 epoch, 60x80 images)", group="demo",
        switch="on",
    )  # fmt: skip
    saliency_method: str = "gradcam++"
    training: object = None

    def resolved(self) -> DemoConfig:
        """The settings actually used (the preset's city and training where none is given)."""
        return dataclasses.replace(
            self,
            preset=self.preset or ("tiny" if self.quick else "demo"),
            training=self.training or demo_training(self.quick),
        )
