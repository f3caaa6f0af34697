"""`SyntheticCitySettings`: what `sare-tf make-synthetic` writes, one field per argument.

Pure Python, so that the command builds its flags from it at start-up (`sare_tf.config_options`).
"""

from __future__ import annotations

import dataclasses

from sare_tf.config_options import image_size_option, option

CITY_PRESETS = ("tiny", "demo")
LAYOUTS = ("dbstruct", "msls", "gsv-cities")


@dataclasses.dataclass(frozen=True)
class SyntheticCitySettings:
    """The city to generate (each field is an argument of `sare-tf make-synthetic`).

    Attributes:
        out: the output folder (the image root of the .mat files).
        preset, seed: the city's size and seed.
        image_size, streets, queries_per_street, appearance_change: overrides of the preset's
            `CityConfig` (None: the preset's).
        layout: also write the city in MSLS's or GSV-Cities's layout.
        force: regenerate even when the same city is there.
    """

    out: str | None = option(
        None, "output folder (becomes the image root)", group="city", flag="OUT", required=True
    )
    preset: str = option(
        "demo", "tiny: a few hundred 60x80 images for tests; demo: ~1600 120x160 images",
        group="city", choices=CITY_PRESETS,
    )  # fmt: skip
    seed: int = option(0, "city seed", group="city")
    image_size: tuple[int, int] | None = image_size_option(
        "override the preset's image size, e.g. 480 640"
    )
    streets: tuple[int, int, int] | None = option(
        None, "override the number of streets per split", group="city", nargs=3, type=int,
        metavar=("TRAIN", "VAL", "TEST"),
    )  # fmt: skip
    queries_per_street: tuple[int, ...] | None = option(
        None, "override queries per street: one number, or three (train val test)",
        group="city", nargs="+", type=int, metavar="N",
    )  # fmt: skip
    appearance_change: float | None = option(
        None, "0 (queries lit like the database) .. 1 (full day/weather changes, default)",
        group="city",
    )  # fmt: skip
    layout: str = option(
        "dbstruct", "also write the city in another dataset's layout: msls (OUT/msls: train as "
        "trondheim, val as cph, test as sf) or gsv-cities (OUT/gsv_cities: the train split as "
        "places of 10 m); the .mat files are always written", group="output", choices=LAYOUTS,
    )  # fmt: skip
    force: bool = option(False, "regenerate even if present", group="output", switch="on")

    def __post_init__(self):
        counts = self.queries_per_street
        if counts is not None and len(counts) not in (1, 3):
            raise ValueError(
                f"--queries-per-street takes one number or three. Received: {list(counts)}"
            )

    def overrides(self) -> dict:
        """The `CityConfig` fields these settings replace in the preset."""
        counts = self.queries_per_street
        values = {
            "image_size": self.image_size,
            "streets": self.streets,
            "queries_per_street": counts if counts is None or len(counts) == 3 else counts[0],
            "appearance_change": self.appearance_change,
        }
        return {name: value for name, value in values.items() if value is not None}
