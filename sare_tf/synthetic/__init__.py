"""The synthetic city: a seeded, rendered street world written in the released dataset formats.

`make_synthetic_city(root, preset)` renders facades along streets (`facades`), photographs them
with a street camera (`render`) and writes Pittsburgh-style `.mat` dbStruct splits (`city`), so
the demo and the tests run the real readers on real JPEG files.
"""

from __future__ import annotations

from sare_tf.synthetic.city import CityConfig, city_config, make_synthetic_city

__all__ = ["CityConfig", "city_config", "make_synthetic_city"]
