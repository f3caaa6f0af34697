"""The synthetic city: a seeded, rendered street world written in the released dataset formats.

`make_synthetic_city(root, preset)` renders facades along streets (`facades`), photographs them
with a street camera (`render`) and writes Pittsburgh-style `.mat` dbStruct splits (`city`), so
the demo and the tests run the real readers on real JPEG files. Names load on first use
(`sare_tf.lazy_exports`).
"""

from __future__ import annotations

from sare_tf.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "city": ("CityConfig", "city_config", "make_synthetic_city"),
        "settings": ("SyntheticCitySettings",),
    },
)
