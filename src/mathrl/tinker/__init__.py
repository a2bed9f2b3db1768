"""The Tinker API, both ways: :mod:`mathrl.tinker.server` serves it over local learners (``mathrl
serve --tinker``); :mod:`mathrl.tinker.wire` is the SDK's binary format."""
