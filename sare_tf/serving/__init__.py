"""`sare-tf serve`: TF Serving's REST protocol for descriptors and localization, on KServe.

`protocol` (pure: parse requests, build responses), `batching` (concurrent requests into one
model call), `server` (the KServe models and the HTTP app). Needs the `serve` extra
(`pip install -e ".[serve]"`).
"""
